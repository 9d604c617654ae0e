"""Several sequences in one row: the step computes real tokens, not padding.

A batch's 2B sequences (prompt + chosen, prompt + rejected) of different lengths would pad each row to
the longest one; answers sampled in rounds vary from a few tokens to the budget, so much of a padded
step is padding. Here they lie side by side in as few rows as hold them (batching.make_packed_batch),
and every layer's attention gets a block-diagonal causal mask (compat.SegmentCache), so each sequence
sees only itself, as in its own row.

Positions do not restart per sequence: mlx-lm gives rotary attention one offset per call, and rotary
attention depends only on position differences, which packing keeps. The self-check (fast_path.py)
compares this forward with the model's own on a probe whose sequences sit behind a long one, and a
model it does not reproduce runs unpacked. Prompts are not shared in this layout (each sequence is
whole), so it pays where padding costs more than a second prompt pass.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.compat import SegmentCache  # mlx-lm's cache and mask protocol (what it relies on: compat.py)
from mlx_dpo.training.batching import PackedBatch


def forward(model: nn.Module, batch: PackedBatch, mask_dims: int = 4) -> mx.array:
    """(R, T, D): the rows' final hidden states; `mask_dims`: one of MASK_LAYOUTS, as the self-check found."""
    caches = [SegmentCache(batch.segments, mask_dims) for _ in model.model.layers]
    return model.model(batch.inputs, cache=caches)


def at_positions(rows: mx.array, positions: mx.array) -> mx.array:
    """(2B, C, ...): what `rows` (R, T, ...) holds at each completion token's predicting position."""
    R, T = rows.shape[:2]
    return rows.reshape(R * T, *rows.shape[2:])[positions]
