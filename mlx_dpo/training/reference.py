"""The reference pass: summed log-probs of every completion under the frozen reference, via the cache.

The reference is the policy's own model in its starting state (the base, or the base with the
starting adapter), run before training changes it: no second model in memory. Only completions
the cache has not seen are computed, in batches, and stored before training starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.events import Event, Status
from mlx_dpo.training.batching import layout_for, make_pair_batch
from mlx_dpo.training.logprobs import completion_logps
from mlx_dpo.training.ref_cache import RefCache
from mlx_dpo.training.tokens import EncodedPair


@dataclass
class RefLogps:
    """Reference summed log-probs (chosen, rejected) per encoded pair."""

    values: dict[EncodedPair, tuple[float, float]]  # batching.make_dpo_batch packs them with the tokens


@dataclass
class ReferenceStats:
    hits: int = 0
    misses: int = 0
    seconds: float = 0.0  # time spent in reference forward passes (0 when all came from the cache)


def reference_logps(
    model: nn.Module,
    pairs: list[EncodedPair],
    cache: RefCache,
    *,
    batch_size: int = 8,
    shared_prompt: bool = True,
    full_logits: bool = False,
    on_event: Callable[[Event], None] = lambda e: None,
) -> tuple[RefLogps, ReferenceStats]:
    """Reference (chosen, rejected) log-probs for every pair, computing only cache misses.

    `batch_size` counts pairs. The batch layout is the one a training step on `model` with the same
    `shared_prompt` setting takes (`batching.layout_for`).
    """
    items = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    hits_before, misses_before = cache.hits, cache.misses
    values = cache.lookup(items)
    missing = [i for i, v in enumerate(values) if v is None]
    stats = ReferenceStats(hits=cache.hits - hits_before, misses=cache.misses - misses_before)
    n = len(pairs)
    # A pair runs whole when either completion is missing (its prompt is shared by both).
    todo = sorted({i % n for i in missing}, key=lambda i: pairs[i].num_tokens, reverse=True)
    if todo:
        # Longest first keeps padding low inside each batch and meets an out-of-memory batch at once.
        start = time.perf_counter()
        layout = layout_for(model, shared_prompt)  # only here: a fully cached pass never touches the model
        was_training = model.training
        model.eval()  # no dropout in the reference
        try:
            for s in range(0, len(todo), batch_size):
                idx = todo[s : s + batch_size]
                batch = make_pair_batch([pairs[i] for i in idx], layout)
                logps = completion_logps(model, batch, full_logits=full_logits)
                mx.eval(logps)
                results = logps.tolist()
                computed = {i: lp for i, lp in zip(idx, results)} | {n + i: lp for i, lp in zip(idx, results[len(idx):])}
                fresh = [(k, lp) for k, lp in computed.items() if values[k] is None]
                cache.store((items[k][0], items[k][1], lp) for k, lp in fresh)
                for k, lp in fresh:
                    values[k] = lp
                on_event(Status("reference pass", done=min(s + batch_size, len(todo)), total=len(todo)))
        finally:
            model.train(was_training)
        stats.seconds = time.perf_counter() - start
    return RefLogps({p: (values[i], values[n + i]) for i, p in enumerate(pairs)}), stats
