"""A method's loss and TRL-named metrics for one batch, from the policy's and the reference's log-probs.

    losses, metrics = method_losses(args, logps, ref_chosen, ref_rejected, desirable)

One place decides what a run's settings mean for a batch: which losses add up (`loss_type`, `loss_weights`),
the f-divergence, LD-DPO's down-weighting of the longer answer's tail (`ld_alpha`), WPO's pair weights
(`use_weighting`), RPO's NLL term, and the two methods with their own trainers in TRL: ORPO (no
reference) and KTO (single answers marked good or bad). The formulas are in losses.py; this module only
wires settings to them, so it stays pure array code and compiles.

KTO examples travel in the pair layout: "chosen" is the example's own completion and "rejected" the
mismatched completion (the previous example's, TRL's rotation) whose log-ratio estimates the KL reference
point; `desirable` says which examples were marked good.

The metrics are per example, shape (B,), named as TRL's trainers log them: DPO's rewards/* and logps/*,
ORPO's nll_loss, log_odds_ratio and log_odds_chosen, KTO's kl. KTO's rewards/chosen is the mean over the
batch's desirable examples (TRL's), spread over the batch so the per-example mean gives it.
"""

from __future__ import annotations

import mlx.core as mx

from mlx_dpo.metric_names import (
    ACCURACY,
    KTO_KL,
    LOGPS_CHOSEN,
    LOGPS_REJECTED,
    MARGIN,
    NLL_LOSS,
    REWARD_CHOSEN,
    REWARD_REJECTED,
)
from mlx_dpo.settings import TrainingArgs, needs_reference
from mlx_dpo.training.logprobs import PairLogps
from mlx_dpo.training.losses import (
    combined_loss,
    implicit_rewards,
    kto_loss,
    kto_reference_point,
    log_sigmoid,
    orpo_log_odds,
    rpo_nll,
    sft_nll,
    simpo_rewards,
)


def is_kto(args: TrainingArgs) -> bool:
    """KTO trains on single answers marked good or bad (it cannot be combined with other losses)."""
    return args.losses == ("kto",)


def ld_weighted(logps: PairLogps, alpha: float) -> PairLogps:
    """LD-DPO: each completion's log-prob with the tokens past the shorter answer's length weighted by α.

    π = Σ_{k < min(L_c, L_r)} log p_k + α·Σ_{k ≥ min(L_c, L_r)} log p_k; needs `logps.tokens`.
    """
    n, C = logps.chosen.shape[0], logps.tokens.shape[1]
    shared = mx.minimum(logps.chosen_lengths, logps.rejected_lengths)
    in_shared = (mx.arange(C)[None, :] < mx.concatenate([shared, shared])[:, None]).astype(mx.float32)
    shared_sum = (logps.tokens * in_shared).sum(axis=-1)
    total = logps.tokens.sum(axis=-1)
    weighted = shared_sum + alpha * (total - shared_sum)
    return PairLogps(weighted[:n], weighted[n:], logps.chosen_lengths, logps.rejected_lengths, logps.tokens)


def ld_reference(full: tuple[float, float], prefix: tuple[float, float], alpha: float) -> tuple[float, float]:
    """The reference side of LD-DPO from two cached values per completion: the whole completion's log-prob
    and its first min(L_c, L_r) tokens' (the log-prob of the cut completion: the model is causal)."""
    return tuple(p + alpha * (f - p) for f, p in zip(full, prefix))


def method_losses(
    args: TrainingArgs,
    logps: PairLogps,
    ref_chosen: mx.array,
    ref_rejected: mx.array,
    desirable: mx.array | None = None,
    pair_weights: mx.array | None = None,
) -> tuple[mx.array, dict[str, mx.array]]:
    """Per-example losses (B,) and TRL-named per-example metrics of one batch."""
    if args.ld_alpha is not None:
        logps = ld_weighted(logps, args.ld_alpha)
    if is_kto(args):
        return _kto(args, logps, ref_chosen, ref_rejected, desirable)
    losses = combined_loss(
        logps.chosen,
        logps.rejected,
        ref_chosen,
        ref_rejected,
        loss_types=args.losses,
        loss_weights=tuple(args.loss_weights) if args.loss_weights else None,
        pair_weights=pair_weights,
        beta=args.beta,
        label_smoothing=args.label_smoothing,
        chosen_lengths=logps.chosen_lengths,
        rejected_lengths=logps.rejected_lengths,
        simpo_gamma=args.simpo_gamma,
        f_divergence_type=args.f_divergence_type,
        f_alpha_divergence_coef=args.f_alpha_divergence_coef,
        discopop_tau=args.discopop_tau,
    )
    if args.rpo_alpha:
        # Weighted as every other term (WPO): RPO is TRL 1.x's sigmoid + sft, whose sft term carries the weights too.
        nll = rpo_nll(logps.chosen, logps.chosen_lengths)
        losses = losses + args.rpo_alpha * (nll if pair_weights is None else nll * pair_weights)
    metrics = pair_metrics(args, logps, ref_chosen, ref_rejected)
    if args.losses == ("orpo",):
        log_odds = orpo_log_odds(logps.chosen, logps.rejected, logps.chosen_lengths, logps.rejected_lengths)
        metrics[NLL_LOSS] = sft_nll(logps.chosen, logps.chosen_lengths)
        metrics["log_odds_ratio"] = log_sigmoid(log_odds)
        metrics["log_odds_chosen"] = log_odds
    return losses, metrics


def pair_metrics(
    args: TrainingArgs, logps: PairLogps, ref_chosen: mx.array, ref_rejected: mx.array
) -> dict[str, mx.array]:
    """DPO's metrics: implicit rewards β·(π − ref), or β·π/L where no reference is used (SimPO's, ORPO's)."""
    if needs_reference(args.loss_type):
        chosen_r = implicit_rewards(logps.chosen, ref_chosen, args.beta)
        rejected_r = implicit_rewards(logps.rejected, ref_rejected, args.beta)
    else:
        chosen_r = simpo_rewards(logps.chosen, logps.chosen_lengths, args.beta)
        rejected_r = simpo_rewards(logps.rejected, logps.rejected_lengths, args.beta)
    return {
        REWARD_CHOSEN: chosen_r,
        REWARD_REJECTED: rejected_r,
        MARGIN: chosen_r - rejected_r,
        ACCURACY: (chosen_r > rejected_r).astype(mx.float32),
        LOGPS_CHOSEN: logps.chosen,
        LOGPS_REJECTED: logps.rejected,
    }


def _kto(
    args: TrainingArgs, logps: PairLogps, ref_own: mx.array, ref_mismatched: mx.array, desirable: mx.array
) -> tuple[mx.array, dict[str, mx.array]]:
    kl = kto_reference_point(logps.rejected, ref_mismatched)
    losses = kto_loss(
        logps.chosen,
        ref_own,
        desirable,
        kl,
        beta=args.beta,
        desirable_weight=args.desirable_weight,
        undesirable_weight=args.undesirable_weight,
    )
    rewards = implicit_rewards(logps.chosen, ref_own, args.beta)
    good, bad = desirable, 1 - desirable
    n = float(desirable.shape[0])
    # Spread each group's mean over the batch: the per-example mean is then TRL's mean over the group.
    spread_good, spread_bad = good * n / mx.maximum(good.sum(), 1), bad * n / mx.maximum(bad.sum(), 1)
    chosen_r, rejected_r = rewards * spread_good, rewards * spread_bad
    return losses, {
        KTO_KL: mx.broadcast_to(kl, desirable.shape),
        REWARD_CHOSEN: chosen_r,
        REWARD_REJECTED: rejected_r,
        MARGIN: chosen_r - rejected_r,
        LOGPS_CHOSEN: logps.chosen * spread_good,
        LOGPS_REJECTED: logps.chosen * spread_bad,
    }
