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
from mlx_dpo.logprobs import make_batch, sequence_logps
from mlx_dpo.ref_cache import RefCache
from mlx_dpo.tokens import EncodedPair
from mlx_dpo.trainer import RefLogps


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
    full_logits: bool = False,
    on_event: Callable[[Event], None] = lambda e: None,
) -> tuple[RefLogps, ReferenceStats]:
    """Reference (chosen, rejected) log-probs for every pair, computing only cache misses."""
    items = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    hits_before, misses_before = cache.hits, cache.misses
    values = cache.lookup(items)
    missing = [i for i, v in enumerate(values) if v is None]
    stats = ReferenceStats(hits=cache.hits - hits_before, misses=cache.misses - misses_before)
    if missing:
        # Longest first keeps padding low inside each batch.
        # Longest first also meets an out-of-memory batch at once, not at the end.
        missing.sort(key=lambda i: len(items[i][0]) + len(items[i][1]), reverse=True)
        start = time.perf_counter()
        was_training = model.training
        model.eval()  # no dropout in the reference
        try:
            for s in range(0, len(missing), batch_size):
                idx = missing[s : s + batch_size]
                logps = sequence_logps(model, make_batch([items[i] for i in idx]), full_logits=full_logits)
                mx.eval(logps)
                results = logps.tolist()
                cache.store((items[i][0], items[i][1], lp) for i, lp in zip(idx, results))
                for i, lp in zip(idx, results):
                    values[i] = lp
                on_event(Status("reference pass", done=min(s + batch_size, len(missing)), total=len(missing)))
        finally:
            model.train(was_training)
        stats.seconds = time.perf_counter() - start
    n = len(pairs)
    return RefLogps({p: (values[i], values[n + i]) for i, p in enumerate(pairs)}), stats
