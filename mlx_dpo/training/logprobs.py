"""Summed log-probabilities of completions given prompts, for a batch of either layout (batching.py).

Only completion positions are projected onto the vocabulary, in chunks of positions, so the
prompt never pays for the (large) vocabulary projection and log-softmax and no whole
(tokens x vocab) float32 tensor is built. `full_logits=True` runs the plain path (every position
projected and log-softmaxed, as TRL does) for checking.

The vocabulary projection is the model's own (`output_head` replays what its forward does after the
transformer), and fast_path.py checks every fast path against the model's own forward before a run uses it.

Everything here is pure array code (no host round-trips), so it runs under `mx.compile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.training import shared_prompt
from mlx_dpo.training.batching import SequenceBatch, SharedPromptBatch, TokenBatch

VOCAB_CHUNK = 64  # completion positions projected onto the vocabulary at a time


class _GivenHidden:
    """Stands in for `model.model` in the model's own forward: returns the given final hidden states,
    and lends every other attribute (embed_tokens, args, ...) from the real inner model."""

    def __init__(self, inner: nn.Module, hidden: mx.array):
        self._inner, self._hidden = inner, hidden

    def __call__(self, *args, **kwargs) -> mx.array:
        return self._hidden

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class _Tail:
    """The model with `.model` replaced by `_GivenHidden`: its own `__call__` then runs only what it
    does after the transformer (the vocabulary projection, soft-capping, logit scales, ...)."""

    def __init__(self, model: nn.Module, hidden: mx.array):
        self._model, self.model = model, _GivenHidden(model.model, hidden)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def output_head(model: nn.Module) -> Callable[[mx.array], mx.array]:
    """Hidden states -> logits, exactly as the model's own forward computes them after `model.model`.

    Rather than knowing each family's head (tied or not, gemma2's soft-cap, cohere's and granite's
    scales), the model's own `__call__` is replayed on the given states. A forward that does anything
    else with its inputs is caught by the self-check (fast_path.py), which then turns this path off.
    """
    call = type(model).__call__

    def head(hidden: mx.array) -> mx.array:
        return call(_Tail(model, hidden), mx.zeros(hidden.shape[:2], dtype=mx.int32))

    return head


def _token_logps(logits: mx.array, targets: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)
    return picked - mx.logsumexp(logits, axis=-1)


def chunked_logps(head: Callable[[mx.array], mx.array], states: mx.array, targets: mx.array) -> mx.array:
    """Log-probs of `targets` from `states`, projecting VOCAB_CHUNK positions at a time."""
    chunks = [
        _token_logps(head(states[:, s : s + VOCAB_CHUNK]), targets[:, s : s + VOCAB_CHUNK])
        for s in range(0, states.shape[1], VOCAB_CHUNK)
    ]
    return mx.concatenate(chunks, axis=1)


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


def shared_prompt_token_logps(model: nn.Module, batch: SharedPromptBatch, full_logits: bool = False) -> mx.array:
    """(2B, C) log-probability of each completion token (0 at padding), each prompt run once (shared_prompt.py)."""
    prompt_hidden, comp_hidden = shared_prompt.forward(model, batch)
    head = output_head(model)
    if full_logits:
        # Pay for every position; only the completion targets are kept.
        prompt_logits = head(prompt_hidden).astype(mx.float32)
        first = mx.concatenate([prompt_logits[:, -1:]] * 2, axis=0)
        logits = mx.concatenate([first, head(comp_hidden[:, :-1]).astype(mx.float32)], axis=1)
        token = _token_logps(logits, batch.completions) + 0.0 * mx.logsumexp(prompt_logits, axis=-1).sum()
    else:
        token = chunked_logps(head, shared_prompt.predicting_states(prompt_hidden, comp_hidden), batch.completions)
    return token * batch.mask


def shared_prompt_logps(model: nn.Module, batch: SharedPromptBatch, full_logits: bool = False) -> mx.array:
    """(2B,) summed log-probability of each completion, each prompt run once (shared_prompt.py)."""
    return shared_prompt_token_logps(model, batch, full_logits).sum(axis=-1)


def completion_logps(model: nn.Module, batch: TokenBatch, full_logits: bool = False) -> mx.array:
    """(2B,) summed log-probs of a pair batch's completions: chosen rows, then rejected rows."""
    if isinstance(batch, SharedPromptBatch):
        return shared_prompt_logps(model, batch, full_logits)
    return sequence_logps(model, batch, full_logits)


def completion_token_logps(model: nn.Module, batch: TokenBatch, full_logits: bool = False) -> mx.array:
    """(2B, C) per-token log-probs of a pair batch's completions (0 at padding), rows as completion_logps."""
    if isinstance(batch, SharedPromptBatch):
        return shared_prompt_token_logps(model, batch, full_logits)
    return token_logps(model, batch, full_logits)


@dataclass
class PairLogps:
    """Policy log-probs of B pairs and their completion lengths, by name."""

    chosen: mx.array  # (B,) summed log-prob of each chosen completion
    rejected: mx.array  # (B,)
    chosen_lengths: mx.array  # (B,) float32 token counts
    rejected_lengths: mx.array  # (B,)
    tokens: mx.array | None = None  # (2B, C) per-token log-probs when asked for (LD-DPO splits them)


def pair_logps(model: nn.Module, batch: TokenBatch, full_logits: bool = False, per_token: bool = False) -> PairLogps:
    """The pairs' chosen and rejected log-probs and lengths, split from `completion_logps`' rows."""
    tokens = completion_token_logps(model, batch, full_logits) if per_token else None
    logps = tokens.sum(axis=-1) if per_token else completion_logps(model, batch, full_logits)
    lengths, n = batch.lengths, logps.shape[0] // 2
    return PairLogps(chosen=logps[:n], rejected=logps[n:], chosen_lengths=lengths[:n], rejected_lengths=lengths[n:],
                     tokens=tokens)
