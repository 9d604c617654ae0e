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

PAD_MULTIPLE = 32  # sequence lengths are padded to a few sizes so kernels and compiled graphs are reused
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


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def make_batch(sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_multiple: int = PAD_MULTIPLE) -> SequenceBatch:
    """Pack (prompt ids, completion ids) pairs into one padded batch (host-side, numpy)."""
    n = len(sequences)
    full_lengths = [len(p) + len(c) - 1 for p, c in sequences]
    T = _round_up(max(full_lengths), pad_multiple)
    C = _round_up(max(len(c) for _, c in sequences), 8)
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
        logits = model(batch.inputs)  # every position projected: the plain path
        idx = batch.positions[..., None]
        picked = mx.take_along_axis(logits, idx, axis=1)
        return _token_logps(picked, batch.targets) * batch.mask
    hidden = model.model(batch.inputs)  # (n, T, D), final norm applied
    hidden = mx.take_along_axis(hidden, batch.positions[..., None], axis=1)  # (n, C, D)
    head = output_head(model)
    chunks = [
        _token_logps(head(hidden[:, s : s + VOCAB_CHUNK]), batch.targets[:, s : s + VOCAB_CHUNK])
        for s in range(0, hidden.shape[1], VOCAB_CHUNK)
    ]
    return mx.concatenate(chunks, axis=1) * batch.mask


def sequence_logps(model: nn.Module, batch: SequenceBatch, full_logits: bool = False) -> mx.array:
    """(n,) summed log-probability of each completion."""
    return token_logps(model, batch, full_logits).sum(axis=-1)
