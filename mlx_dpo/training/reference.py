"""The reference pass: summed log-probs of every completion under the frozen reference, via the cache.

The reference is the policy's own model in its starting state (the base, or the base with the
starting adapter), run before training changes it: no second model in memory. Only completions
the cache has not seen are computed, in batches, and stored before training starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.events import Event, Status
from mlx_dpo.models.session import SelfChecks
from mlx_dpo.settings import TrainingArgs
from mlx_dpo.training import distributed, fast_path
from mlx_dpo.training.batching import make_pair_batch
from mlx_dpo.training.logprobs import completion_logps
from mlx_dpo.training.pause import pause_at
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
    pack: bool = False,
    on_event: Callable[[Event], None] = lambda e: None,
    checks: SelfChecks | None = None,
) -> tuple[RefLogps, ReferenceStats]:
    """Reference (chosen, rejected) log-probs for every pair, computing only cache misses.

    `batch_size` counts pairs. The batch layout is the one a training step on `model` with the same
    `shared_prompt` and `pack` settings takes (`fast_path.layout`).

    With several ranks (distributed.py) a value cached on any rank serves all of them; the batches
    of misses are dealt out to the ranks in turn and the results gathered, so every rank ends with
    every value (the same batches as on one rank: the same numbers) and stores what its cache lacked.

    `checks`: the model session's record of the self-check (fast_path.py); None runs the check for this call.
    """
    items = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    group = distributed.group()
    values = cache.lookup(items)
    local_missing = [i for i, v in enumerate(values) if v is None]
    values = group.merge(values, "gathering cached reference log-probs")
    missing = [i for i, v in enumerate(values) if v is None]
    stats = ReferenceStats(hits=len(items) - len(missing), misses=len(missing))
    writes = group.writes_cache(str(cache.path.parent))  # one writer per cache file, when ranks share a machine
    stored: set[int] = set()
    n = len(pairs)
    # A pair runs whole when either completion is missing (its prompt is shared by both).
    todo = sorted({i % n for i in missing}, key=lambda i: pairs[i].num_tokens, reverse=True)
    if todo:
        # Longest first keeps padding low inside each batch and meets an out-of-memory batch at once.
        start = time.perf_counter()
        # Only here: a fully cached pass never touches the model. The self-check runs before the first batch.
        checks = checks if checks is not None else SelfChecks()
        args = fast_path.checked_args(
            model, checks, TrainingArgs(shared_prompt=shared_prompt, full_logits=full_logits, pack=pack), on_event
        )
        layout, dims = fast_path.layout(model, checks, args)
        full_logits = args.full_logits
        was_training = model.training
        model.eval()  # no dropout in the reference
        try:
            mine = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)][group.rank :: group.size]
            done, total = 0, sum(len(idx) for idx in mine)  # progress counts this rank's pairs
            for idx in mine:
                batch = make_pair_batch([pairs[i] for i in idx], layout)
                logps = completion_logps(model, batch, full_logits=full_logits, mask_dims=dims)
                mx.eval(logps)
                results = logps.tolist()
                computed = {i: lp for i, lp in zip(idx, results)} | {
                    n + i: lp for i, lp in zip(idx, results[len(idx) :])
                }
                fresh = [(k, lp) for k, lp in computed.items() if values[k] is None]
                if writes:
                    cache.store((items[k][0], items[k][1], lp) for k, lp in fresh)
                    stored.update(k for k, _ in fresh)
                for k, lp in fresh:
                    values[k] = lp
                done += len(idx)
                on_event(Status("reference pass", done=done, total=total))
                pause_at("reference")  # a test hook (pause.py)
        finally:
            model.train(was_training)
        stats.seconds = time.perf_counter() - start
    if group.size > 1:
        values = group.merge(values, "gathering the reference pass")
        if writes:  # what this machine's cache lacked: computed elsewhere, or cached on another machine
            cache.store((items[k][0], items[k][1], values[k]) for k in local_missing if k not in stored)
    return RefLogps({p: (values[i], values[n + i]) for i, p in enumerate(pairs)}), stats
