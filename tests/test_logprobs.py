"""Completion log-probs: batched, right-padded, projected onto the vocabulary in chunks of positions.

Whatever the batching, padding or chunking, a completion's log-prob is what a plain forward pass of
that one sequence says: log_softmax of the logits, summed over the completion's tokens. The chunked
path and the plain `full_logits` path agree in value and in their gradients.
"""

from __future__ import annotations

import json

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.models.adapter import LoraSettings, add_adapter
from mlx_dpo.training import logprobs
from mlx_dpo.training.batching import make_batch
from mlx_dpo.training.logprobs import sequence_logps, token_logps
from mlx_dpo.training.tokens import Encoder

PER_TOKEN_TOLERANCE = 1e-4


def direct_token_logps(model: nn.Module, prompt, completion) -> np.ndarray:
    """The reference computation: one unpadded sequence, a full forward, log_softmax, the completion's tokens."""
    seq = list(prompt) + list(completion)
    logits = model(mx.array([seq]))[0].astype(mx.float32)  # (L, V)
    logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    predicting = np.arange(len(prompt) - 1, len(seq) - 1)  # the position whose output predicts each completion token
    return logp[predicting, np.array(completion)]


def random_sequences(
    lengths: list[tuple[int, int]], seed: int = 0, vocab: int = 49152
) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(3, vocab, p).tolist(), rng.integers(3, vocab, c).tolist()) for p, c in lengths]


def untied_tiny_model(tiny) -> nn.Module:
    """The same small llama with its own lm_head instead of the tied embedding."""
    from mlx_lm.models import llama

    config = json.loads((tiny / "config.json").read_text())
    config["tie_word_embeddings"] = False
    mx.random.seed(1)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    return model


# --- the batch layout -------------------------------------------------------------------------------------------


def test_make_batch_packs_prompt_plus_completion_right_padded_with_the_completion_positions():
    batch = make_batch([([5, 6, 7], [8, 9]), ([5], [6, 7, 8, 9, 10])], pad_multiple=4)

    # Inputs are prompt + completion without its last token, padded to a multiple of pad_multiple.
    assert batch.inputs.tolist() == [[5, 6, 7, 8, 0, 0, 0, 0], [5, 6, 7, 8, 9, 0, 0, 0]]
    # The output at position p predicts the token at p + 1: the first completion token is predicted at the prompt's end.
    assert batch.positions.tolist() == [[2, 3, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 0, 0, 0]]
    assert batch.targets.tolist() == [[8, 9, 0, 0, 0, 0, 0, 0], [6, 7, 8, 9, 10, 0, 0, 0]]
    assert batch.mask.tolist() == [[1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    assert batch.lengths.tolist() == [2, 5]
    assert batch.num_tokens == 4 + 5  # real input tokens, padding excluded
    assert batch.inputs.dtype == mx.int32 and batch.mask.dtype == mx.float32


# --- equal to a plain unbatched forward --------------------------------------------------------------------------


def test_batched_padded_log_probs_equal_a_direct_unbatched_forward_on_the_default_model(default_model):
    brief = [{"role": "system", "content": "Be brief."}]  # short prompts keep this real-model test fast
    pairs = [
        PreferencePair("a", brief + [{"role": "user", "content": "Name a colour."}], "Blue.", "I would rather not."),
        PreferencePair("b", brief + [{"role": "user", "content": "What is 2+2?"}], "2 + 2 = 4.", "5"),
    ]
    encoded = Encoder(default_model.tokenizer).encode_all(pairs)[0]
    sequences = [(e.prompt, c) for e in encoded for c in (e.chosen, e.rejected)]
    assert len({len(p) + len(c) for p, c in sequences}) == 4  # four different lengths share one padded batch

    batch = make_batch(sequences)
    chunked = np.array(token_logps(default_model.model, batch))  # what sequence_logps sums
    full = np.array(token_logps(default_model.model, batch, full_logits=True))

    for i, (prompt, completion) in enumerate(sequences):
        direct = direct_token_logps(default_model.model, prompt, completion)
        n = len(completion)
        for per_token in (chunked, full):
            np.testing.assert_allclose(per_token[i, :n], direct, rtol=0, atol=PER_TOKEN_TOLERANCE)
            assert abs(per_token[i].sum() - direct.sum()) <= PER_TOKEN_TOLERANCE * n
            assert np.all(per_token[i, n:] == 0.0)


def test_sequence_logps_is_the_sum_of_the_token_logps(tiny_weights):
    batch = make_batch(random_sequences([(5, 3), (9, 12), (2, 1)]))
    for full_logits in (False, True):
        per_token = np.array(token_logps(tiny_weights, batch, full_logits=full_logits))
        sums = np.array(sequence_logps(tiny_weights, batch, full_logits=full_logits))
        np.testing.assert_allclose(sums, per_token.sum(axis=1), rtol=1e-6)


# --- padding and chunking ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("full_logits", [False, True], ids=["chunked", "full-logits"])
def test_padding_contributes_exactly_zero_and_what_the_padding_holds_does_not_matter(tiny_weights, full_logits):
    sequences = random_sequences([(5, 3), (9, 12), (2, 1)])
    batch = make_batch(sequences)
    per_token = np.array(token_logps(tiny_weights, batch, full_logits=full_logits))
    mask = np.array(batch.mask)

    assert np.all(per_token[mask == 0] == 0.0)
    assert np.all(per_token[mask == 1] < 0.0)

    # Fill the padded input positions with real token ids: causal attention never lets them reach a real position.
    inputs = np.array(batch.inputs)
    for i, (p, c) in enumerate(sequences):
        inputs[i, len(p) + len(c) - 1 :] = 1000 + i
    batch.inputs = mx.array(inputs)
    np.testing.assert_allclose(
        np.array(token_logps(tiny_weights, batch, full_logits=full_logits)), per_token, atol=1e-6
    )


def test_a_sequence_scores_the_same_alone_and_padded_next_to_a_longer_one(tiny_weights):
    short, long = random_sequences([(4, 3), (40, 30)], seed=2)
    alone = sequence_logps(tiny_weights, make_batch([short])).item()
    batched = sequence_logps(tiny_weights, make_batch([short, long])).tolist()

    assert abs(batched[0] - alone) <= PER_TOKEN_TOLERANCE * len(short[1])
    assert abs(batched[1] - direct_token_logps(tiny_weights, *long).sum()) <= PER_TOKEN_TOLERANCE * len(long[1])


@pytest.mark.parametrize("vocab_chunk", [1, 5, logprobs.VOCAB_CHUNK])
def test_chunked_and_full_logits_log_probs_agree_across_vocab_chunk_boundaries(tiny_weights, monkeypatch, vocab_chunk):
    monkeypatch.setattr(logprobs, "VOCAB_CHUNK", vocab_chunk)
    sequences = random_sequences([(6, 23), (3, 11), (10, 2)], seed=3)
    assert max(len(c) for _, c in sequences) > vocab_chunk or vocab_chunk == logprobs.VOCAB_CHUNK
    batch = make_batch(sequences)

    chunked = np.array(token_logps(tiny_weights, batch))
    full = np.array(token_logps(tiny_weights, batch, full_logits=True))

    np.testing.assert_allclose(chunked, full, rtol=0, atol=PER_TOKEN_TOLERANCE)
    for i, (prompt, completion) in enumerate(sequences):
        np.testing.assert_allclose(
            chunked[i, : len(completion)],
            direct_token_logps(tiny_weights, prompt, completion),
            rtol=0,
            atol=PER_TOKEN_TOLERANCE,
        )


# --- gradients -----------------------------------------------------------------------------------------------------


def lora_gradients(model: nn.Module, batch, full_logits: bool) -> tuple[float, dict[str, np.ndarray]]:
    weights = mx.array([1.0, -0.5, 2.0, -1.5])  # any mix, so every sequence's gradient counts with its own sign

    def loss(m):
        return (sequence_logps(m, batch, full_logits=full_logits) * weights).sum()

    value, grads = nn.value_and_grad(model, loss)(model)
    mx.eval(value, grads)
    return value.item(), {k: np.array(v) for k, v in tree_flatten(grads)}


@pytest.mark.parametrize("head", ["tied embedding", "own lm_head"])
def test_chunked_and_full_logits_give_equal_lora_gradients(tiny, tiny_weights, monkeypatch, head):
    model = tiny_weights if head == "tied embedding" else untied_tiny_model(tiny)
    add_adapter(model, LoraSettings(rank=4))
    # LoRA's B starts at zero, which would make every gradient for A zero: start from small random values instead.
    mx.random.seed(0)
    model.load_weights(
        [
            (k, 0.05 * mx.random.normal(v.shape))
            for k, v in tree_flatten(model.trainable_parameters())
            if k.endswith("lora_b")
        ],
        strict=False,
    )
    monkeypatch.setattr(logprobs, "VOCAB_CHUNK", 5)  # several chunks per completion
    batch = make_batch(random_sequences([(7, 12), (3, 17), (12, 4), (5, 9)], seed=4))

    chunked_value, chunked = lora_gradients(model, batch, full_logits=False)
    full_value, full = lora_gradients(model, batch, full_logits=True)

    assert abs(chunked_value - full_value) <= 1e-4 * abs(full_value)
    assert chunked.keys() == full.keys()
    assert {k.rsplit(".", 1)[-1] for k in chunked} == {"lora_a", "lora_b"}  # only the adapter trains
    for name in chunked:
        scale = np.abs(full[name]).max()
        assert scale > 0, f"{name}: gradient is all zero"
        np.testing.assert_allclose(chunked[name], full[name], rtol=0, atol=1e-4 * scale, err_msg=name)
