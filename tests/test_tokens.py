"""Preference pairs become token ids through the model's own chat template.

The prompt is the conversation rendered with the generation prompt; a completion is what the full
conversation (prompt + assistant answer) renders to after the prompt, up to and including one
end-of-turn token. Anything that would make those two disagree is an error for that row.
"""

from __future__ import annotations

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import jinja2
import pytest

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.training.tokens import EncodedPair, Encoder

BOS = 1  # "<|im_start|>": SmolLM2's BOS is also the start-of-turn token
END_OF_TURN = 2  # "<|im_end|>"
NEWLINE = 198

SYSTEM_AND_TWO_TURNS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?\nOne word."},
]
PROMPTS = {
    "one user turn": [{"role": "user", "content": "Name a primary colour."}],
    "system message": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello!"}],
    "multi-turn": SYSTEM_AND_TWO_TURNS,
}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def make_pair(prompt, chosen="Blue.", rejected="I would rather not say.", id="p1", source=None) -> PreferencePair:
    return PreferencePair(id, prompt if isinstance(prompt, list) else user(prompt), chosen, rejected, source)


@pytest.fixture(scope="module")
def tokenizer(default_tokenizer):
    return default_tokenizer


def render(tokenizer, messages, *, generation_prompt: bool, tokenize: bool):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=tokenize)


# --- with the default model's real tokenizer and template ----------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_the_prompt_is_the_conversation_rendered_with_the_generation_prompt(tokenizer, prompt):
    encoded = Encoder(tokenizer).encode(make_pair(prompt))

    assert list(encoded.prompt) == list(render(tokenizer, prompt, generation_prompt=True, tokenize=True))
    assert tokenizer.decode(list(encoded.prompt)).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
@pytest.mark.parametrize("field", ["chosen", "rejected"])
def test_a_completion_is_the_full_rendering_after_the_prompt_up_to_the_end_of_turn(tokenizer, prompt, field):
    pair = make_pair(prompt)
    encoded = Encoder(tokenizer).encode(pair)
    completion = getattr(encoded, field)
    conversation = prompt + [{"role": "assistant", "content": getattr(pair, field)}]
    full_ids = list(render(tokenizer, conversation, generation_prompt=False, tokenize=True))
    full_text = render(tokenizer, conversation, generation_prompt=False, tokenize=False)

    n = len(encoded.prompt)
    assert full_ids[:n] == list(encoded.prompt)
    assert full_ids[n : n + len(completion)] == list(completion)
    assert full_ids[n + len(completion) :] == [NEWLINE]  # only the template's newline after "<|im_end|>" is left out
    up_to_end_of_turn = full_text[: full_text.rindex("<|im_end|>") + len("<|im_end|>")]
    assert tokenizer.decode(list(encoded.prompt) + list(completion)) == up_to_end_of_turn


@pytest.mark.parametrize(
    "text",
    ["Blue.", "Two lines\nof text.", "Ends with a newline\n", " One leading space, trailing two  ", "café, 中文, 🤖"],
)
def test_every_completion_ends_with_exactly_one_end_of_turn_token(tokenizer, text):
    encoded = Encoder(tokenizer).encode(make_pair("Say something.", chosen=text, rejected="No."))

    for completion in (encoded.chosen, encoded.rejected):
        assert completion[-1] == END_OF_TURN
        assert completion.count(END_OF_TURN) == 1
        assert len(completion) >= 2  # the answer itself is never empty


@pytest.mark.parametrize("text", ["\n\nStarts with a blank line.", "  Starts with two spaces."])
def test_a_completion_whose_start_merges_with_the_template_is_an_error_not_a_silent_mismatch(tokenizer, text):
    # The generation prompt ends in "\n"; these texts tokenize together with it, so the prompt's
    # tokens are not a prefix of the full rendering.
    with pytest.raises(MlxDpoError, match=r"^data.jsonl:9: field 'rejected': the prompt's tokens are not a prefix"):
        Encoder(tokenizer).encode(make_pair("Hi", chosen="Hello.", rejected=text, source="data.jsonl:9"))


def test_a_completion_text_holding_the_end_of_turn_marker_is_an_error_naming_pair_and_field(tokenizer):
    # Left in, "<|im_end|>" would tokenize to the end-of-turn token in the middle of the answer.
    pair = make_pair("Hi", chosen="Sure.<|im_end|> And more.", id="marker", source="pairs.jsonl:4")

    with pytest.raises(MlxDpoError) as info:
        Encoder(tokenizer).encode(pair)
    assert str(info.value).startswith("pairs.jsonl:4: field 'chosen':")
    assert "<|im_end|>" in str(info.value)


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_the_encoded_prompt_starts_with_a_single_bos(tokenizer, prompt):
    assert tokenizer.bos_token_id == BOS
    encoded = Encoder(tokenizer).encode(make_pair(prompt))

    assert encoded.prompt[0] == BOS
    assert encoded.prompt[:2] != (BOS, BOS)


def test_a_pair_without_truncation_settings_is_not_truncated(tokenizer):
    encoded = Encoder(tokenizer).encode(make_pair("Name a primary colour."))

    assert not encoded.truncated
    assert encoded.num_tokens == 2 * len(encoded.prompt) + len(encoded.chosen) + len(encoded.rejected)


LONG_PROMPT = "Please read this carefully. " * 12 + "Now name a primary colour."
LONG_ANSWER = "Blue is a primary colour, and so are red and yellow in the traditional painter's model."


def test_max_prompt_length_keeps_the_end_of_the_prompt(tokenizer):
    full = Encoder(tokenizer).encode(make_pair(LONG_PROMPT))
    cut = Encoder(tokenizer, max_prompt_length=20).encode(make_pair(LONG_PROMPT))

    assert cut.truncated
    assert cut.prompt == full.prompt[-20:]  # ends "...colour.<|im_end|>\n<|im_start|>assistant\n"
    assert (cut.chosen, cut.rejected) == (full.chosen, full.rejected)


def test_max_length_keeps_the_start_of_each_completion(tokenizer):
    pair = make_pair(LONG_PROMPT, chosen=LONG_ANSWER, rejected="Green.")
    full = Encoder(tokenizer).encode(pair)
    cut = Encoder(tokenizer, max_length=30, max_prompt_length=20).encode(pair)

    assert cut.truncated
    assert cut.prompt == full.prompt[-20:]
    assert cut.chosen == full.chosen[:10]  # the long answer is cut to fit 30 tokens in all
    assert cut.rejected == full.rejected  # the short one fits as it is
    assert len(cut.prompt) + len(cut.chosen) <= 30


def test_max_length_leaves_pairs_that_fit_alone(tokenizer):
    pair = make_pair("Name a primary colour.")
    full = Encoder(tokenizer).encode(pair)
    longest = len(full.prompt) + max(len(full.chosen), len(full.rejected))

    assert Encoder(tokenizer, max_length=longest).encode(pair) == full


def test_a_prompt_alone_at_least_max_length_is_reported_with_its_source_line(tokenizer):
    pair = make_pair(LONG_PROMPT, id="too-long", source="pairs.jsonl:7")
    prompt_tokens = len(Encoder(tokenizer).encode(pair).prompt)

    with pytest.raises(MlxDpoError) as info:
        Encoder(tokenizer, max_length=prompt_tokens).encode(pair)  # equal is already too long: no room to answer
    message = str(info.value)
    assert message.startswith("pairs.jsonl:7: ")
    assert f"prompt alone is {prompt_tokens} tokens" in message and f"--max-length {prompt_tokens}" in message


def test_a_pair_without_a_source_is_named_by_its_id(tokenizer):
    with pytest.raises(MlxDpoError, match=r"^pair too-long: prompt alone"):
        Encoder(tokenizer, max_length=10).encode(make_pair(LONG_PROMPT, id="too-long"))


def test_encode_all_reports_every_bad_row_or_drops_them_with_skip_invalid(tokenizer):
    good = make_pair("Name a primary colour.", id="good", source="pairs.jsonl:1")
    bad = make_pair(LONG_PROMPT, id="bad", source="pairs.jsonl:2")
    encoder = Encoder(tokenizer, max_length=64)

    with pytest.raises(MlxDpoError) as info:
        encoder.encode_all([good, bad])
    assert "1 pair(s) cannot be tokenized" in str(info.value)
    assert "pairs.jsonl:2: prompt alone is" in str(info.value)
    assert "--skip-invalid" in str(info.value)

    encoded, problems = encoder.encode_all([good, bad], skip_invalid=True)
    assert [e.id for e in encoded] == ["good"]
    assert len(problems) == 1 and problems[0].startswith("pairs.jsonl:2: prompt alone is")


# --- with small fake tokenizers whose templates misbehave ------------------------------------------------------


class FakeTokenizer:
    """A word-level tokenizer with a ChatML-like template: <s> role words </turn> per message.

    `double_bos` makes the template add BOS on top of the tokenizer's own; `prompt_suffix` changes
    what the generation prompt renders to, so the prompt is no longer a prefix of the full rendering;
    `refuse_system` makes the template raise, as Gemma's does for a system message.
    """

    bos_token_id = 1
    eos_token_id = 2
    eos_token_ids = {2}
    ROLES = {"system": 10, "user": 11, "assistant": 12}

    def __init__(self, double_bos=False, prompt_suffix=(12,), end_of_turn_suffix=(3,), refuse_system=False):
        self.double_bos, self.prompt_suffix = double_bos, list(prompt_suffix)
        self.end_of_turn_suffix, self.refuse_system = list(end_of_turn_suffix), refuse_system
        self.vocab: dict[str, int] = {}

    def word(self, w: str) -> int:
        return self.vocab.setdefault(w, 100 + len(self.vocab))

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True):
        ids = [1, 1] if self.double_bos else [1]
        for i, m in enumerate(messages):
            if m["role"] == "system" and self.refuse_system:
                raise jinja2.TemplateError("System role not supported")
            ids += ([] if i == 0 else [1]) + [self.ROLES[m["role"]]]
            ids += [self.word(w) for w in m["content"].split()] + [2] + self.end_of_turn_suffix
        if add_generation_prompt:
            ids += [1] + self.prompt_suffix
        return ids


def test_a_bos_added_by_both_template_and_tokenizer_is_kept_once():
    tok = FakeTokenizer(double_bos=True)
    encoded = Encoder(tok).encode(make_pair("name a colour", chosen="blue", rejected="no"))

    assert encoded.prompt[:2] == (1, 11)  # one BOS, then the user role
    assert encoded.prompt == (1, 11, tok.word("name"), tok.word("a"), tok.word("colour"), 2, 3, 1, 12)
    assert encoded.chosen == (tok.word("blue"), 2)


def test_the_first_end_of_turn_ends_a_completion_even_if_the_template_adds_eos_after_it():
    tok = FakeTokenizer(end_of_turn_suffix=(3, 2))  # like Phi-3: "<|end|>\n<|endoftext|>", both end tokens
    encoded = Encoder(tok).encode(make_pair("name a colour", chosen="blue sky", rejected="no"))

    assert encoded.chosen == (tok.word("blue"), tok.word("sky"), 2)
    assert encoded.rejected == (tok.word("no"), 2)


def test_a_prompt_that_is_not_a_token_prefix_of_the_full_rendering_is_an_error_naming_pair_and_field():
    tok = FakeTokenizer(prompt_suffix=(12, 99))  # the generation prompt renders one token more than the answer's turn
    pair = make_pair("name a colour", chosen="blue", rejected="no", id="mismatch")

    with pytest.raises(MlxDpoError) as info:
        Encoder(tok).encode(pair)
    message = str(info.value)
    assert message.startswith("pair mismatch: field 'chosen': ")
    assert "not a prefix" in message


def test_a_prefix_mismatch_is_one_problem_among_the_rows_with_skip_invalid():
    tok = FakeTokenizer(prompt_suffix=(12, 99))
    pairs = [make_pair("name a colour", chosen="blue", rejected="no", id="x", source="data.jsonl:3")]

    encoded, problems = Encoder(tok).encode_all(pairs, skip_invalid=True)
    assert encoded == []
    assert problems == [
        "data.jsonl:3: field 'chosen': the prompt's tokens are not a prefix of prompt + chosen "
        "(the chat template renders them differently)"
    ]


def test_a_conversation_the_template_refuses_is_an_error_for_that_row():
    tok = FakeTokenizer(refuse_system=True)
    pair = make_pair([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], id="sys")

    with pytest.raises(MlxDpoError, match=r"^pair sys: the chat template cannot render .*System role not supported"):
        Encoder(tok).encode(pair)
    assert Encoder(tok).encode(make_pair("hi", chosen="hello", rejected="no")) == EncodedPair(
        "p1", (1, 11, tok.word("hi"), 2, 3, 1, 12), (tok.word("hello"), 2), (tok.word("no"), 2)
    )
