"""Summed log-probabilities of completions given prompts, batched and padded.

Only completion positions are projected onto the vocabulary, in chunks of positions, so the
prompt never pays for the (large) vocabulary projection and log-softmax and no whole
(tokens x vocab) float32 tensor is built. `full_logits=True` runs the plain path (the model's
own forward over every position) for checking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# Lengths are padded to multiples of this: few enough shapes that compiled graphs are reused, and at
# most 7 wasted positions per sequence (every position costs a full forward and backward).
PAD_MULTIPLE = 8
VOCAB_CHUNK = 64  # completion positions projected onto the vocabulary at a time


@dataclass
class SequenceBatch:
    """n right-padded sequences `prompt + completion[:-1]` and where their completion tokens are."""

    inputs: mx.array  # (n, T) int32
    positions: mx.array  # (n, C) int32: the input position whose output predicts each completion token
    targets: mx.array  # (n, C) int32: the completion tokens
    mask: mx.array  # (n, C) float32: 1 for real completion tokens
    lengths: mx.array  # (n,) float32: completion token counts
    num_tokens: int  # real (unpadded) input tokens, for throughput


def round_up(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple (at least one multiple): the few padded lengths batches use."""
    return max(multiple, -(-n // multiple) * multiple)


def make_batch(sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_multiple: int = PAD_MULTIPLE) -> SequenceBatch:
    """Pack (prompt ids, completion ids) pairs into one padded batch (host-side, numpy)."""
    n = len(sequences)
    full_lengths = [len(p) + len(c) - 1 for p, c in sequences]
    T = round_up(max(full_lengths), pad_multiple)
    C = round_up(max(len(c) for _, c in sequences), pad_multiple)
    inputs = np.zeros((n, T), np.int32)
    positions = np.zeros((n, C), np.int32)
    targets = np.zeros((n, C), np.int32)
    mask = np.zeros((n, C), np.float32)
    for i, (prompt, completion) in enumerate(sequences):
        seq = list(prompt) + list(completion)
        inputs[i, : len(seq) - 1] = seq[:-1]
        c = len(completion)
        positions[i, :c] = np.arange(len(prompt) - 1, len(prompt) - 1 + c)
        targets[i, :c] = completion
        mask[i, :c] = 1.0
    return SequenceBatch(
        inputs=mx.array(inputs),
        positions=mx.array(positions),
        targets=mx.array(targets),
        mask=mx.array(mask),
        lengths=mx.array(mask.sum(axis=1)),
        num_tokens=sum(full_lengths),
    )


def output_head(model: nn.Module) -> Callable[[mx.array], mx.array]:
    """The vocabulary projection of an mlx-lm model: its lm_head, or the tied embedding."""
    head = getattr(model, "lm_head", None)
    if head is not None:
        return head
    return model.model.embed_tokens.as_linear


def _token_logps(logits: mx.array, targets: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)
    return picked - mx.logsumexp(logits, axis=-1)


def token_logps(model: nn.Module, batch: SequenceBatch, full_logits: bool = False) -> mx.array:
    """(n, C) log-probabilities of each completion token (0 at padding)."""
    if full_logits:
        # The plain path, as TRL runs it: every position projected and log-softmaxed, then picked.
        logits = model(batch.inputs).astype(mx.float32)
        lse = mx.take_along_axis(mx.logsumexp(logits, axis=-1), batch.positions, axis=1)
        picked = mx.take_along_axis(logits, batch.positions[..., None], axis=1)
        picked = mx.take_along_axis(picked, batch.targets[..., None], axis=-1).squeeze(-1)
        return (picked - lse) * batch.mask
    hidden = model.model(batch.inputs)  # (n, T, D), final norm applied
    hidden = mx.take_along_axis(hidden, batch.positions[..., None], axis=1)  # (n, C, D)
    return chunked_logps(output_head(model), hidden, batch.targets) * batch.mask


def sequence_logps(model: nn.Module, batch: SequenceBatch, full_logits: bool = False) -> mx.array:
    """(n,) summed log-probability of each completion."""
    return token_logps(model, batch, full_logits).sum(axis=-1)


def chunked_logps(head: Callable[[mx.array], mx.array], states: mx.array, targets: mx.array) -> mx.array:
    """Log-probs of `targets` from `states`, projecting VOCAB_CHUNK positions at a time."""
    chunks = [
        _token_logps(head(states[:, s : s + VOCAB_CHUNK]), targets[:, s : s + VOCAB_CHUNK])
        for s in range(0, states.shape[1], VOCAB_CHUNK)
    ]
    return mx.concatenate(chunks, axis=1)


def pair_batch(pairs: Sequence, shared_prompt: bool = True, model: nn.Module | None = None) -> tuple[tuple[mx.array, ...], int]:
    """Host-side packing of pairs into the arrays `pair_logps_from_arrays` reads, and the token count.

    `shared_prompt` packs each prompt once (see shared_prompt.py); off, each pair is two full sequences.
    """
    from mlx_dpo import shared_prompt as sp

    if shared_prompt and (model is None or sp.supports_shared_prompt(model)):
        b = sp.make_pair_batch(pairs)
        return (b.prompts, b.prompt_mask, b.completions, b.mask, b.lengths), b.num_tokens
    b = make_batch([(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs])
    return (b.inputs, b.positions, b.targets, b.mask, b.lengths), b.num_tokens


def pair_logps_from_arrays(model: nn.Module, arrays: Sequence[mx.array], full_logits: bool = False) -> tuple[mx.array, mx.array]:
    """(2B,) summed completion log-probs (chosen rows, then rejected rows) and (2B,) lengths.

    Pure array code (no host round-trips), so it can run under `mx.compile`. `full_logits`
    projects every position onto the vocabulary, as a plain implementation would.
    """
    from mlx_dpo import shared_prompt as sp

    if arrays[1].dtype == mx.bool_:  # shared-prompt layout: (prompts, prompt_mask, completions, mask, lengths)
        batch = sp.PairBatch(*arrays, num_tokens=0)
        prompt_hidden, comp_hidden = sp.forward(model, batch)
        head = output_head(model)
        if full_logits:
            # Pay for every position; only the completion targets are kept.
            prompt_logits = head(prompt_hidden).astype(mx.float32)
            first = mx.concatenate([prompt_logits[:, -1:]] * 2, axis=0)
            logits = mx.concatenate([first, head(comp_hidden[:, :-1]).astype(mx.float32)], axis=1)
            token = _token_logps(logits, batch.completions) + 0.0 * mx.logsumexp(prompt_logits, axis=-1).sum()
        else:
            token = chunked_logps(head, sp.predicting_states(prompt_hidden, comp_hidden), batch.completions)
        return (token * batch.mask).sum(axis=-1), batch.lengths
    inputs, positions, targets, mask, lengths = arrays
    batch = SequenceBatch(inputs, positions, targets, mask, lengths, num_tokens=0)
    return sequence_logps(model, batch, full_logits), lengths
