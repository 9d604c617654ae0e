"""Pairs to padded token arrays, on the host: the two batch layouts and the one place padding is decided.

A batch of B pairs goes through the model in one of three layouts:

  SequenceBatch      each pair as two full sequences, prompt + chosen and prompt + rejected
                     (rows 0..B are the chosen, rows B..2B the rejected); every model runs it.
  SharedPromptBatch  each prompt once, left-padded, with both completions on top of it
                     (shared_prompt.py runs it); needs mlx-lm's usual model layout.
  PackedBatch        the 2B full sequences laid side by side in as few rows as hold them, so the
                     step computes almost no padding (packed.py runs it); same model layout.

The layout is decided once per run, by `layout_for(model, shared_prompt, pack)` when the step (or the
reference pass) is built, and every batch of that run is laid out in it. A `DpoBatch` adds what the
loss needs besides tokens: the reference log-probs and the pairs' token count.

Compiled functions take arrays, not objects: `arrays()` gives a batch's arrays in the order its
class declares them and `from_arrays()` rebuilds the batch from them inside the compiled function.
Host-side counts (`num_tokens`) stay outside, so a new count never means a new compilation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_dpo.compat import has_mlx_lm_layout
from mlx_dpo.training.tokens import EncodedPair

# Lengths are padded to multiples of this: few enough shapes that compiled graphs are reused, and at
# most 7 wasted positions per sequence (every position costs a full forward and backward).
PAD_MULTIPLE = 8


def round_up(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple (at least one multiple): the few padded lengths batches use."""
    return max(multiple, -(-n // multiple) * multiple)


class _ArrayFields:
    """A dataclass of arrays plus a host-side `num_tokens` count, passed to compiled code as its arrays."""

    num_tokens: int

    def arrays(self) -> tuple[mx.array, ...]:
        """The array fields in declaration order (`num_tokens` stays on the host)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "num_tokens")

    @classmethod
    def from_arrays(cls, arrays: Sequence[mx.array]) -> Any:
        """The batch again from `arrays()`, inside a compiled function (its host count is not known there)."""
        return cls(*arrays, num_tokens=0)


@dataclass
class SequenceBatch(_ArrayFields):
    """n right-padded sequences `prompt + completion[:-1]` and where their completion tokens are."""

    inputs: mx.array  # (n, T) int32
    positions: mx.array  # (n, C) int32: the input position whose output predicts each completion token
    targets: mx.array  # (n, C) int32: the completion tokens
    mask: mx.array  # (n, C) float32: 1 for real completion tokens
    lengths: mx.array  # (n,) float32: completion token counts
    num_tokens: int = 0  # real (unpadded) input tokens, for throughput


@dataclass
class SharedPromptBatch(_ArrayFields):
    """B pairs: left-padded prompts and right-padded completions (chosen rows, then rejected rows)."""

    prompts: mx.array  # (B, P) int32, left-padded
    prompt_mask: mx.array  # (B, P) bool: real prompt tokens
    completions: mx.array  # (2B, C) int32, right-padded: chosen[0..B), rejected[0..B)
    mask: mx.array  # (2B, C) float32: real completion tokens
    lengths: mx.array  # (2B,) float32
    num_tokens: int = 0  # real tokens run through the model (each prompt once)


@dataclass
class PackedBatch(_ArrayFields):
    """2B sequences `prompt + completion[:-1]` side by side in R rows (chosen ones first, then rejected ones)."""

    inputs: mx.array  # (R, T) int32
    segments: mx.array  # (R, T) int32: the sequence each position belongs to (-1: the padding ending a row)
    positions: mx.array  # (2B, C) int32: row * T + column of the input whose output predicts each completion token
    targets: mx.array  # (2B, C) int32: the completion tokens
    mask: mx.array  # (2B, C) float32: 1 for real completion tokens
    lengths: mx.array  # (2B,) float32
    num_tokens: int = 0  # real input tokens


TokenBatch = SequenceBatch | SharedPromptBatch | PackedBatch


class BatchLayout(Enum):
    """How a run's pairs go through the model; see the module docstring."""

    SEQUENCES = SequenceBatch
    SHARED_PROMPT = SharedPromptBatch
    PACKED = PackedBatch


def supports_shared_prompt(model: Any) -> bool:
    """Shared prompts need mlx-lm's usual layout (model.model with layers and a cache argument: compat.py)."""
    return has_mlx_lm_layout(model)


def layout_for(model: Any, shared_prompt: bool, pack: bool = False) -> BatchLayout:
    """The run's layout: packed rows when asked for, else prompts shared when asked for, where the model's
    layout allows it.

    Callers pass both settings as the self-check (fast_path.py) left them, so a model whose fast forward
    did not reproduce its own gets two full sequences."""
    if pack and supports_shared_prompt(model):
        return BatchLayout.PACKED
    if shared_prompt and supports_shared_prompt(model):
        return BatchLayout.SHARED_PROMPT
    return BatchLayout.SEQUENCES


def make_batch(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_multiple: int = PAD_MULTIPLE
) -> SequenceBatch:
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


def make_shared_prompt_batch(pairs: Sequence[EncodedPair], pad_multiple: int = PAD_MULTIPLE) -> SharedPromptBatch:
    """Pack pairs with each prompt once, left-padded so every prompt ends at the same position."""
    B = len(pairs)
    P = round_up(max(len(p.prompt) for p in pairs), pad_multiple)
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    C = round_up(max(len(c) for c in completions), pad_multiple)
    prompts = np.zeros((B, P), np.int32)
    prompt_mask = np.zeros((B, P), bool)
    for i, p in enumerate(pairs):
        prompts[i, P - len(p.prompt) :] = p.prompt
        prompt_mask[i, P - len(p.prompt) :] = True
    comp = np.zeros((2 * B, C), np.int32)
    mask = np.zeros((2 * B, C), np.float32)
    for i, c in enumerate(completions):
        comp[i, : len(c)] = c
        mask[i, : len(c)] = 1.0
    return SharedPromptBatch(
        prompts=mx.array(prompts),
        prompt_mask=mx.array(prompt_mask),
        completions=mx.array(comp),
        mask=mx.array(mask),
        lengths=mx.array(mask.sum(axis=1)),
        num_tokens=sum(len(p.prompt) for p in pairs) + sum(len(c) for c in completions),
    )


def make_packed_batch(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_multiple: int = PAD_MULTIPLE, row_length: int = 0
) -> PackedBatch:
    """Lay (prompt ids, completion ids) pairs side by side in rows (host-side, numpy).

    Rows are as long as the longest sequence padded (`make_batch`'s T, or `row_length` if longer), never longer:
    a model that reads the length it is run at sees what the plain batch shows it. Longest first, each sequence
    goes into the first row with room for it (first-fit decreasing), which leaves little room unused.
    """
    full_lengths = [len(p) + len(c) - 1 for p, c in sequences]
    T = round_up(max(max(full_lengths), row_length), pad_multiple)
    C = round_up(max(len(c) for _, c in sequences), pad_multiple)
    used: list[int] = []  # filled columns of each row
    place: dict[int, tuple[int, int]] = {}  # sequence -> (row, first column)
    for i in sorted(range(len(sequences)), key=lambda i: -full_lengths[i]):
        row = next((r for r, u in enumerate(used) if u + full_lengths[i] <= T), len(used))
        if row == len(used):
            used.append(0)
        place[i], used[row] = (row, used[row]), used[row] + full_lengths[i]
    inputs = np.zeros((len(used), T), np.int32)
    segments = np.full((len(used), T), -1, np.int32)
    positions = np.zeros((len(sequences), C), np.int32)
    targets = np.zeros((len(sequences), C), np.int32)
    mask = np.zeros((len(sequences), C), np.float32)
    for i, (prompt, completion) in enumerate(sequences):
        row, start = place[i]
        seq = list(prompt) + list(completion)
        inputs[row, start : start + len(seq) - 1] = seq[:-1]
        segments[row, start : start + len(seq) - 1] = i
        c = len(completion)
        positions[i, :c] = row * T + start + len(prompt) - 1 + np.arange(c)
        targets[i, :c] = completion
        mask[i, :c] = 1.0
    return PackedBatch(
        inputs=mx.array(inputs),
        segments=mx.array(segments),
        positions=mx.array(positions),
        targets=mx.array(targets),
        mask=mx.array(mask),
        lengths=mx.array(mask.sum(axis=1)),
        num_tokens=sum(full_lengths),
    )


def make_pair_batch(pairs: Sequence[EncodedPair], layout: BatchLayout) -> TokenBatch:
    """B pairs laid out in `layout`: 2B completions, the chosen ones first, then the rejected ones."""
    if layout is BatchLayout.SHARED_PROMPT:
        return make_shared_prompt_batch(pairs)
    sequences = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    return make_packed_batch(sequences) if layout is BatchLayout.PACKED else make_batch(sequences)


def padding_share(batch: TokenBatch) -> float:
    """The share of the positions a batch runs through the model that hold no real token."""
    if isinstance(batch, SharedPromptBatch):
        computed = batch.prompts.size + batch.completions.size
    else:
        computed = batch.inputs.size
    return 1.0 - batch.num_tokens / computed


@dataclass
class DpoBatch:
    """What one loss evaluation reads: the pairs' tokens in the run's layout and their reference log-probs."""

    tokens: TokenBatch
    ref_chosen: mx.array  # (B,) float32: reference summed log-prob of each chosen completion
    ref_rejected: mx.array  # (B,) float32
    # (B,) float32: 1 for an answer marked good, 0 for bad (KTO examples, methods.py); 1 for pairs.
    desirable: mx.array
    # The pairs' tokens, each pair counted as two sequences (EncodedPair.num_tokens) whatever the
    # layout, so tokens/s means the same with prompts shared or not.
    num_tokens: int = 0

    @property
    def layout(self) -> BatchLayout:
        return BatchLayout(type(self.tokens))

    def arrays(self) -> tuple[mx.array, ...]:
        """The token arrays in their class's order, then the reference chosen and rejected log-probs."""
        return (*self.tokens.arrays(), self.ref_chosen, self.ref_rejected, self.desirable)

    @classmethod
    def from_arrays(cls, layout: BatchLayout, arrays: Sequence[mx.array]) -> DpoBatch:
        *tokens, ref_chosen, ref_rejected, desirable = arrays
        return cls(layout.value.from_arrays(tokens), ref_chosen, ref_rejected, desirable)


def make_dpo_batch(
    pairs: Sequence[EncodedPair], layout: BatchLayout, reference: Mapping[EncodedPair, tuple[float, float]]
) -> DpoBatch:
    """The host side of a loss evaluation: pairs packed in `layout`, with their (chosen, rejected) reference
    log-probs."""
    return DpoBatch(
        tokens=make_pair_batch(pairs, layout),
        ref_chosen=mx.array([reference[p][0] for p in pairs], dtype=mx.float32),
        ref_rejected=mx.array([reference[p][1] for p in pairs], dtype=mx.float32),
        desirable=mx.array([1.0 if p.desirable is None else float(p.desirable) for p in pairs], dtype=mx.float32),
        num_tokens=sum(p.num_tokens for p in pairs),
    )
