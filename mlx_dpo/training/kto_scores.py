"""`mlx-dpo eval --loss kto`: single answers marked good or bad, scored as KTO scores them.

Each answer's implicit reward is β·u with u = π − ref; KTO's reference point z is the batch mean of u over
mismatched (prompt, other answer) pairs, clamped at 0 (methods.py). The result, over all answers:

    loss       the mean KTO loss (as training computes it)
    kl         z, averaged over the answers
    margin     mean reward of the good answers − mean reward of the bad ones (TRL's rewards/margins; a group
               with no answers counts 0)
    accuracy   the share of answers on their label's side of the reference point: u > z for a good answer,
               u < z for a bad one (where KTO's own term for the answer is below half its weight)
    n_examples how many answers (a pair gives two: its chosen answer good, its rejected answer bad)

Training's KTO metrics are group means spread over the batch (methods._kto); the per-answer values are
recovered from them here with each batch's group sizes.
"""

from __future__ import annotations

from collections.abc import Iterable

import mlx.core as mx

from mlx_dpo.metric_names import KTO_KL, LOGPS_CHOSEN, LOGPS_REJECTED, LOSS
from mlx_dpo.training.reference import RefLogps
from mlx_dpo.training.tokens import EncodedPair


def kto_scores(
    batches: Iterable[tuple[object, list[EncodedPair], dict[str, mx.array]]], ref: RefLogps, beta: float
) -> tuple[dict, list[dict]]:
    """(the result, one `--per-example` row per answer) from training.trainer.evaluate_batches' batches."""
    rows = []
    for _, chunk, metrics in batches:
        values = {k: v.tolist() for k, v in metrics.items()}
        good = sum(bool(p.desirable) for p in chunk)
        for i, p in enumerate(chunk):
            # Undo the spread: logps/chosen holds π·n/#good for a good answer, logps/rejected π·n/#bad for a bad.
            group = good if p.desirable else len(chunk) - good
            logp = values[LOGPS_CHOSEN if p.desirable else LOGPS_REJECTED][i] * group / len(chunk)
            u, z = logp - ref.values[p][0], values[KTO_KL][i]
            rows.append(
                {
                    "id": p.id,
                    "label": bool(p.desirable),
                    "policy_logp": logp,
                    "ref_logp": ref.values[p][0],
                    "reward": beta * u,
                    "tokens": len(p.chosen),
                    "_loss": values[LOSS][i],
                    "_kl": z,
                    "_right": (u > z) if p.desirable else (u < z),
                }
            )
    good = [r["reward"] for r in rows if r["label"]]
    bad = [r["reward"] for r in rows if not r["label"]]
    n = len(rows)
    result = {
        "accuracy": sum(r["_right"] for r in rows) / n,
        "margin": (sum(good) / len(good) if good else 0.0) - (sum(bad) / len(bad) if bad else 0.0),
        "loss": sum(r["_loss"] for r in rows) / n,
        "kl": sum(r["_kl"] for r in rows) / n,
        "n_examples": n,
    }
    return result, rows
