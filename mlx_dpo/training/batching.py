"""Pairs to padded token arrays, on the host: the two batch layouts and the one place padding is decided.

A batch of B pairs goes through the model in one of two layouts:

  SequenceBatch      each pair as two full sequences, prompt + chosen and prompt + rejected
                     (rows 0..B are the chosen, rows B..2B the rejected); every model runs it.
  SharedPromptBatch  each prompt once, left-padded, with both completions on top of it
                     (shared_prompt.py runs it); needs mlx-lm's usual model layout.

The layout is decided once per run, by `layout_for(model, shared_prompt)` when the step (or the
reference pass) is built, and every batch of that run is packed in it. A `DpoBatch` adds what the
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


TokenBatch = SequenceBatch | SharedPromptBatch


class BatchLayout(Enum):
    """How a run's pairs go through the model; see the module docstring."""

    SEQUENCES = SequenceBatch
    SHARED_PROMPT = SharedPromptBatch


def supports_shared_prompt(model: Any) -> bool:
    """Shared prompts need mlx-lm's usual layout (model.model with layers and a cache argument: compat.py)."""
    return has_mlx_lm_layout(model)


def layout_for(model: Any, shared_prompt: bool) -> BatchLayout:
    """The run's layout: prompts shared when the settings ask for it and the model's layout allows it.

    Callers pass `shared_prompt` as the self-check (fast_path.py) left it, so a model whose shared-prompt
    forward did not reproduce its own gets two full sequences."""
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


def make_pair_batch(pairs: Sequence[EncodedPair], layout: BatchLayout) -> TokenBatch:
    """B pairs packed in `layout`: 2B completions, the chosen ones first, then the rejected ones."""
    if layout is BatchLayout.SHARED_PROMPT:
        return make_shared_prompt_batch(pairs)
    return make_batch([(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs])


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
