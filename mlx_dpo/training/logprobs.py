"""Summed log-probabilities of completions given prompts, for a batch of either layout (batching.py).

Only completion positions are projected onto the vocabulary, in chunks of positions, so the
prompt never pays for the (large) vocabulary projection and log-softmax and no whole
(tokens x vocab) float32 tensor is built. `full_logits=True` runs the plain path (every position
projected and log-softmaxed, as TRL does) for checking.

WPO (`use_weighting`) also needs log Σ_v p_v² at each completion token, a second reduction over the same
logits: the `*_stats` functions return it beside the log-probs, computed chunk by chunk where the
log-probs are, without gradient (`wpo_weights` in losses.py turns both into pair weights).

The vocabulary projection is the model's own (`compat.output_head` replays what its forward does after the
transformer), and fast_path.py checks every fast path against the model's own forward before a run uses it.

Everything here is pure array code (no host round-trips), so it runs under `mx.compile`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.compat import output_head  # the model's own head, replayed (what it relies on: compat.py)
from mlx_dpo.training import packed, shared_prompt
from mlx_dpo.training.batching import PackedBatch, SequenceBatch, SharedPromptBatch, TokenBatch
from mlx_dpo.training.losses import wpo_weights

VOCAB_CHUNK = 64  # completion positions projected onto the vocabulary at a time


def _log_sum_sq(logits: mx.array, lse: mx.array) -> mx.array:
    """log Σ_v p_v² = logsumexp(2z) − 2·logsumexp(z) at each position (WPO's normaliser); no gradient."""
    return mx.stop_gradient(mx.logsumexp(2 * logits, axis=-1) - 2 * lse)


def _token_stats(logits: mx.array, targets: mx.array, squares: bool) -> tuple[mx.array, mx.array | None]:
    logits = logits.astype(mx.float32)
    lse = mx.logsumexp(logits, axis=-1)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)
    return picked - lse, _log_sum_sq(logits, lse) if squares else None


def chunked_logps(head: Callable[[mx.array], mx.array], states: mx.array, targets: mx.array) -> mx.array:
    """Log-probs of `targets` from `states`, projecting VOCAB_CHUNK positions at a time."""
    return _chunks(head, states, targets, squares=False)[0]


def chunked_stats(
    head: Callable[[mx.array], mx.array], states: mx.array, targets: mx.array
) -> tuple[mx.array, mx.array]:
    """`chunked_logps` and log Σ_v p_v² at each position, from the same projected chunks."""
    return _chunks(head, states, targets, squares=True)


def _chunks(
    head: Callable[[mx.array], mx.array], states: mx.array, targets: mx.array, squares: bool
) -> tuple[mx.array, mx.array | None]:
    chunks = [
        _token_stats(head(states[:, s : s + VOCAB_CHUNK]), targets[:, s : s + VOCAB_CHUNK], squares)
        for s in range(0, states.shape[1], VOCAB_CHUNK)
    ]
    logps = mx.concatenate([c[0] for c in chunks], axis=1)
    return logps, mx.concatenate([c[1] for c in chunks], axis=1) if squares else None


def _completion_head(
    head: Callable[[mx.array], mx.array], states: mx.array, targets: mx.array, squares: bool
) -> tuple[mx.array, mx.array | None]:
    return chunked_stats(head, states, targets) if squares else (chunked_logps(head, states, targets), None)


def token_logps(model: nn.Module, batch: SequenceBatch, full_logits: bool = False) -> mx.array:
    """(n, C) log-probabilities of each completion token (0 at padding)."""
    return token_stats(model, batch, full_logits, squares=False)[0]


def token_stats(
    model: nn.Module, batch: SequenceBatch, full_logits: bool = False, squares: bool = True
) -> tuple[mx.array, mx.array | None]:
    """(n, C) log-probabilities of each completion token and, with `squares`, log Σ_v p_v² there (0 at padding)."""
    if full_logits:
        # The plain path, as TRL runs it: every position projected and log-softmaxed, then picked.
        logits = model(batch.inputs).astype(mx.float32)
        all_lse = mx.logsumexp(logits, axis=-1)
        lse = mx.take_along_axis(all_lse, batch.positions, axis=1)
        picked = mx.take_along_axis(logits, batch.positions[..., None], axis=1)
        picked = mx.take_along_axis(picked, batch.targets[..., None], axis=-1).squeeze(-1)
        log_sq = mx.take_along_axis(_log_sum_sq(logits, all_lse), batch.positions, axis=1) if squares else None
        return (picked - lse) * batch.mask, None if log_sq is None else log_sq * batch.mask
    hidden = model.model(batch.inputs)  # (n, T, D), final norm applied
    hidden = mx.take_along_axis(hidden, batch.positions[..., None], axis=1)  # (n, C, D)
    logps, log_sq = _completion_head(output_head(model), hidden, batch.targets, squares)
    return logps * batch.mask, None if log_sq is None else log_sq * batch.mask


def sequence_logps(model: nn.Module, batch: SequenceBatch, full_logits: bool = False) -> mx.array:
    """(n,) summed log-probability of each completion."""
    return token_logps(model, batch, full_logits).sum(axis=-1)


def shared_prompt_token_logps(
    model: nn.Module, batch: SharedPromptBatch, full_logits: bool = False, mask_dims: int = 4
) -> mx.array:
    """(2B, C) log-probability of each completion token (0 at padding), each prompt run once (shared_prompt.py;
    `mask_dims`: the attention-mask layout the self-check found for the model)."""
    return shared_prompt_token_stats(model, batch, full_logits, squares=False, mask_dims=mask_dims)[0]


def shared_prompt_token_stats(
    model: nn.Module, batch: SharedPromptBatch, full_logits: bool = False, squares: bool = True, mask_dims: int = 4
) -> tuple[mx.array, mx.array | None]:
    """`shared_prompt_token_logps` and, with `squares`, log Σ_v p_v² at each completion token (0 at padding)."""
    prompt_hidden, comp_hidden = shared_prompt.forward(model, batch, mask_dims)
    head = output_head(model)
    if full_logits:
        # Pay for every position; only the completion targets are kept.
        prompt_logits = head(prompt_hidden).astype(mx.float32)
        first = mx.concatenate([prompt_logits[:, -1:]] * 2, axis=0)
        logits = mx.concatenate([first, head(comp_hidden[:, :-1]).astype(mx.float32)], axis=1)
        token, log_sq = _token_stats(logits, batch.completions, squares)
        token = token + 0.0 * mx.logsumexp(prompt_logits, axis=-1).sum()
    else:
        states = shared_prompt.predicting_states(prompt_hidden, comp_hidden)
        token, log_sq = _completion_head(head, states, batch.completions, squares)
    return token * batch.mask, None if log_sq is None else log_sq * batch.mask


def shared_prompt_logps(
    model: nn.Module, batch: SharedPromptBatch, full_logits: bool = False, mask_dims: int = 4
) -> mx.array:
    """(2B,) summed log-probability of each completion, each prompt run once (shared_prompt.py)."""
    return shared_prompt_token_logps(model, batch, full_logits, mask_dims).sum(axis=-1)


def packed_token_stats(
    model: nn.Module, batch: PackedBatch, full_logits: bool = False, squares: bool = True, mask_dims: int = 4
) -> tuple[mx.array, mx.array | None]:
    """(2B, C) log-probs of each completion token of a packed batch (packed.py) and, with `squares`,
    log Σ_v p_v² there (0 at padding). `full_logits` projects every position of the rows, as the plain path does."""
    head = output_head(model)
    hidden = packed.forward(model, batch, mask_dims)
    if full_logits:  # every position pays for the projection; only the completion targets are kept
        token, log_sq = _token_stats(packed.at_positions(head(hidden), batch.positions), batch.targets, squares)
    else:
        token, log_sq = _completion_head(head, packed.at_positions(hidden, batch.positions), batch.targets, squares)
    return token * batch.mask, None if log_sq is None else log_sq * batch.mask


def completion_logps(model: nn.Module, batch: TokenBatch, full_logits: bool = False, mask_dims: int = 4) -> mx.array:
    """(2B,) summed log-probs of a pair batch's completions: chosen rows, then rejected rows. `mask_dims` is for a
    shared-prompt or packed batch: the attention-mask layout the self-check found for the model (fast_path)."""
    if isinstance(batch, SharedPromptBatch):
        return shared_prompt_logps(model, batch, full_logits, mask_dims)
    if isinstance(batch, PackedBatch):
        return packed_token_stats(model, batch, full_logits, squares=False, mask_dims=mask_dims)[0].sum(axis=-1)
    return sequence_logps(model, batch, full_logits)


def completion_token_logps(
    model: nn.Module, batch: TokenBatch, full_logits: bool = False, mask_dims: int = 4
) -> mx.array:
    """(2B, C) per-token log-probs of a pair batch's completions (0 at padding), rows as completion_logps."""
    return completion_token_stats(model, batch, full_logits, squares=False, mask_dims=mask_dims)[0]


def completion_token_stats(
    model: nn.Module, batch: TokenBatch, full_logits: bool = False, squares: bool = True, mask_dims: int = 4
) -> tuple[mx.array, mx.array | None]:
    """`completion_token_logps` and, with `squares`, log Σ_v p_v² at each completion token (WPO's normaliser)."""
    if isinstance(batch, SharedPromptBatch):
        return shared_prompt_token_stats(model, batch, full_logits, squares, mask_dims)
    if isinstance(batch, PackedBatch):
        return packed_token_stats(model, batch, full_logits, squares, mask_dims)
    return token_stats(model, batch, full_logits, squares)


@dataclass
class PairLogps:
    """Policy log-probs of B pairs and their completion lengths, by name."""

    chosen: mx.array  # (B,) summed log-prob of each chosen completion
    rejected: mx.array  # (B,)
    chosen_lengths: mx.array  # (B,) float32 token counts
    rejected_lengths: mx.array  # (B,)
    tokens: mx.array | None = None  # (2B, C) per-token log-probs when asked for (LD-DPO splits them)
    weights: mx.array | None = None  # (B,) WPO pair weights when asked for (no gradient)


def pair_logps(
    model: nn.Module,
    batch: TokenBatch,
    full_logits: bool = False,
    per_token: bool = False,
    weighting: bool = False,
    mask_dims: int = 4,
) -> PairLogps:
    """The pairs' chosen and rejected log-probs and lengths, split from `completion_logps`' rows; with
    `weighting`, WPO's pair weights from the same pass (losses.wpo_weights)."""
    weights = None
    if weighting:
        tokens, log_sq = completion_token_stats(model, batch, full_logits, mask_dims=mask_dims)
        weights = wpo_weights(tokens, log_sq, batch.lengths)
    else:
        tokens = completion_token_logps(model, batch, full_logits, mask_dims) if per_token else None
    logps = tokens.sum(axis=-1) if tokens is not None else completion_logps(model, batch, full_logits, mask_dims)
    lengths, n = batch.lengths, logps.shape[0] // 2
    return PairLogps(
        chosen=logps[:n],
        rejected=logps[n:],
        chosen_lengths=lengths[:n],
        rejected_lengths=lengths[n:],
        tokens=tokens,
        weights=weights,
    )
