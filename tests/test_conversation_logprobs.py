"""A multi-turn pair trains on exactly what the model computes for that conversation: its log-probs, by every step
path, equal the model's own forward over the chat template's rendering of the whole conversation, token for token;
and the app samples the next turn from that same rendering."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from helpers import assistant, system, user

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.models.generate import prompt_tokens
from mlx_dpo.models.load import load_model
from mlx_dpo.training import fast_path
from mlx_dpo.training.batching import BatchLayout, layout_for, make_pair_batch
from mlx_dpo.training.logprobs import completion_token_logps
from mlx_dpo.training.tokens import Encoder

# Conversations of one to four turns, system message or not, so the shared-prompt batch left-pads prompts of
# very different lengths (its padding and positions are what a long history stresses).
PAIRS = [
    PreferencePair("one-turn", [user("Name a colour.")], "Blue.", "Colours are many and varied."),
    PreferencePair(
        "three-turns",
        [
            system("Be brief."),
            user("Name a colour."),
            assistant("Blue."),
            user("Why that one?"),
            assistant("The sky is blue."),
            user("And at night?"),
        ],
        "Black, mostly.",
        "Still blue, I think, or perhaps dark grey.",
    ),
    PreferencePair(
        "four-turns",
        [
            user("Hi"),
            assistant("Hello! How can I help?"),
            user("Count to three."),
            assistant("1, 2, 3."),
            user("Now backwards."),
            assistant("3, 2, 1."),
            user("Now in French."),
        ],
        "Trois, deux, un.",
        "Un, deux, trois.",
    ),
]


def rendered_logps(model, tokenizer, prompt: list[dict], answer: str) -> tuple[list[int], np.ndarray]:
    """The answer's tokens and log-probs read straight off the model: the template renders the conversation with the
    answer as the assistant's turn; the answer is every token after the generation prompt's rendering, up to and
    including the first end-of-turn token; one forward of the whole rendering scores each given all before it."""
    generation = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
    full = list(tokenizer.apply_chat_template(prompt + [assistant(answer)], tokenize=True))
    assert full[: len(generation)] == generation
    rest = full[len(generation) :]
    ends = Encoder(tokenizer).end_of_turn
    answer_ids = rest[: next(i for i, t in enumerate(rest) if t in ends) + 1]
    logits = model(mx.array([full[:-1]]))[0].astype(mx.float32)
    logps = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    start = len(generation) - 1  # the position predicting the answer's first token
    rows = logps[start : start + len(answer_ids)]
    return answer_ids, np.array(mx.take_along_axis(rows, mx.array(answer_ids)[:, None], axis=-1)[:, 0])


@pytest.fixture(scope="module", params=["tiny-llama", "small-qwen2"])
def loaded(request, tiny, small_model):
    """Two real models with two chat templates: SmolLM2's (on a tiny llama) and a ChatML qwen2 tokenizer."""
    session = load_model(str(tiny if request.param == "tiny-llama" else small_model))
    fast_path.fast_paths(session.model, session.checks)
    return session


@pytest.mark.parametrize("shared_prompt", [False, True], ids=["sequences", "shared-prompt"])
def test_a_multi_turn_pairs_log_probs_are_the_models_own_on_the_rendered_conversation_token_for_token(
    loaded, shared_prompt
):
    model, tokenizer = loaded.model, loaded.tokenizer
    encoded = Encoder(tokenizer).encode_all(PAIRS)[0]
    layout = layout_for(model, shared_prompt)
    assert (layout is BatchLayout.SHARED_PROMPT) == shared_prompt
    batch = make_pair_batch(encoded, layout)
    tokens = np.array(completion_token_logps(model, batch, mask_dims=fast_path.mask_dims(model, loaded.checks)))
    rows = [(p, e.chosen, p.chosen) for p, e in zip(PAIRS, encoded)] + [
        (p, e.rejected, p.rejected) for p, e in zip(PAIRS, encoded)
    ]  # the batch's rows: chosen, then rejected
    for row, (pair, ids, text) in enumerate(rows):
        expected_ids, expected = rendered_logps(model, tokenizer, pair.prompt, text)
        assert list(ids) == expected_ids, pair.id
        np.testing.assert_allclose(tokens[row, : len(ids)], expected, atol=1e-4, err_msg=pair.id)
        assert not tokens[row, len(ids) :].any()  # padding scores nothing


def test_the_next_turn_is_sampled_from_the_prompt_that_training_encodes(loaded):
    # The app and online rounds sample a conversation's next turn from `prompt_tokens`; training encodes its pair.
    encoder = Encoder(loaded.tokenizer)
    for pair in PAIRS:
        assert prompt_tokens(loaded.tokenizer, pair.prompt) == list(encoder.encode(pair).prompt), pair.id


def test_a_long_conversation_cut_to_max_prompt_length_keeps_its_last_turns(loaded):
    pair = PAIRS[2]  # four turns
    full = Encoder(loaded.tokenizer).encode(pair)
    cut = Encoder(loaded.tokenizer, max_prompt_length=12).encode(pair)
    assert cut.truncated and cut.prompt == full.prompt[-12:] and cut.chosen == full.chosen
    # The end kept is the last user message and the generation prompt: what the answer replies to.
    assert "French" in loaded.tokenizer.decode(list(cut.prompt))
