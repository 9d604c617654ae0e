"""Preference losses: turn summed completion log-probs into per-example losses, as TRL 1.16 defines them.

Every function is pure MLX (no evaluation, no Python branching on array values), so it can sit inside
`mx.grad` or `mx.compile`. Inputs are shape (B,): one summed log-prob (or token count) per pair.
Per-example losses are returned, shape (B,); a batch's loss is their mean, so a weighted sum of
per-example losses (`combined_loss`) is exactly TRL's weighted sum of the losses' means. The batch-level
losses (aot, aot_unpaired, sft, orpo's NLL) still return (B,) values, computed over the whole batch.

The loss names (LOSS_TYPES) and the rules on their settings live in mlx_dpo.settings.
"""

from __future__ import annotations

import math

import mlx.core as mx

from mlx_dpo.settings import F_DIVERGENCES, LOSS_TYPES, REFERENCE_FREE, TrainingArgs, check_loss_settings

__all__ = [
    "LOSS_TYPES",
    "combined_loss",
    "f_scores",
    "implicit_rewards",
    "kto_loss",
    "log1mexp",
    "log_sigmoid",
    "orpo_log_odds",
    "orpo_loss",
    "preference_loss",
    "rpo_nll",
    "sft_nll",
    "simpo_rewards",
    "wpo_weights",
]

_NEEDS_LENGTHS = ("ipo", "simpo", "sigmoid_norm", "sft", "orpo")


def log_sigmoid(x: mx.array) -> mx.array:
    """log σ(x) = −softplus(−x), written with logaddexp so it stays finite for |x| in the thousands."""
    return -mx.logaddexp(0.0, -x)


def log1mexp(x: mx.array) -> mx.array:
    """log(1 − eˣ) for x < 0, accurate at both ends (the two branches of Mächler's note)."""
    x = mx.minimum(x, -1e-7)  # a log-prob of exactly 0 would give log 0
    return mx.where(x > -0.6931472, mx.log(-mx.expm1(x)), mx.log1p(-mx.exp(x)))


def implicit_rewards(policy_logps: mx.array, ref_logps: mx.array, beta: float) -> mx.array:
    """DPO's implicit reward β·(π − ref): how much more the policy likes a completion than the reference does."""
    return beta * (policy_logps - ref_logps)


def simpo_rewards(policy_logps: mx.array, lengths: mx.array, beta: float) -> mx.array:
    """SimPO's reference-free reward β·π/L: the length-normalised log-prob, so long answers are not penalised."""
    return beta * policy_logps / lengths


def rpo_nll(chosen_logps: mx.array, chosen_lengths: mx.array) -> mx.array:
    """Mean per-token negative log-likelihood of the chosen completion, per pair (−π_c/L_c).

    RPO adds `rpo_alpha * rpo_nll(...)` to the preference loss so the chosen answers' likelihood
    does not drift down while the margin grows.
    """
    return -chosen_logps / chosen_lengths


def sft_nll(chosen_logps: mx.array, chosen_lengths: mx.array) -> mx.array:
    """The batch's token-mean cross-entropy on the chosen completions, −Σπ_c/ΣL_c, repeated per pair (TRL's sft)."""
    return mx.broadcast_to(-chosen_logps.sum() / chosen_lengths.sum(), chosen_logps.shape)


def wpo_weights(token_logps: mx.array, log_sum_sq: mx.array, lengths: mx.array) -> mx.array:
    """WPO's pair weights (TRL's use_weighting, eq. 2 of the WPO paper), without gradient:
      w(y) = exp(mean over y's tokens of (log p_t − log Σ_v p_v²)),  weight of a pair = w(chosen)·w(rejected)
    Dividing by Σ_v p_v² (the probability two samples of that position agree) measures each token against the
    policy's own confidence there, so a pair the policy would itself write weighs near 1. Inputs are (2B, C)
    per-token values, 0 at padding (chosen rows, then rejected rows) and (2B,) token counts; returns (B,).
    """
    per_answer = mx.exp(mx.stop_gradient((token_logps - log_sum_sq).sum(axis=-1) / mx.maximum(lengths, 1)))
    n = per_answer.shape[0] // 2
    return per_answer[:n] * per_answer[n:]


def f_scores(
    log_ratio: mx.array, f_divergence_type: str, alpha: float = TrainingArgs.f_alpha_divergence_coef
) -> mx.array:
    """The f-DPO score f'(t) at t = π/ref = e^u, u = π − ref, with its constants (TRL 1.16's f_divergence_type):
      reverse_kl        log t = u                                            (plain DPO)
      forward_kl        1 − 1/t = 1 − e^(−u)
      js_divergence     log(2t/(1+t)) = log 2 + log σ(u)
      alpha_divergence  (t^(α−1) − 1)/(α−1) = (e^((α−1)·u) − 1)/(α−1), exponent clipped at 80; α = 1 is reverse_kl
    A constant cancels in s_c − s_r, but not where a loss divides each score by its own length (ipo,
    sigmoid_norm): there the scores must be f'(t) itself, as TRL computes them.
    """
    if f_divergence_type == "reverse_kl" or (f_divergence_type == "alpha_divergence" and abs(alpha - 1) < 1e-6):
        return log_ratio
    if f_divergence_type == "forward_kl":
        return 1 - mx.exp(-log_ratio)
    if f_divergence_type == "js_divergence":
        return math.log(2) + log_sigmoid(log_ratio)
    if f_divergence_type == "alpha_divergence":
        return (mx.exp(mx.minimum((alpha - 1) * log_ratio, 80.0)) - 1) / (alpha - 1)
    raise ValueError(f"unknown f_divergence_type {f_divergence_type!r}; choose from {', '.join(F_DIVERGENCES)}")


def orpo_log_odds(
    chosen_logps: mx.array, rejected_logps: mx.array, chosen_lengths: mx.array, rejected_lengths: mx.array
) -> mx.array:
    """log odds(chosen) − log odds(rejected) on per-token mean log-probs p: odds = p/(1−p), so
    (c−r) − (log(1−eᶜ) − log(1−eʳ))."""
    c, r = chosen_logps / chosen_lengths, rejected_logps / rejected_lengths
    return (c - r) - (log1mexp(c) - log1mexp(r))


def orpo_loss(
    chosen_logps: mx.array, rejected_logps: mx.array, chosen_lengths: mx.array, rejected_lengths: mx.array, beta: float
) -> mx.array:
    """ORPO per pair: the chosen NLL (batch token mean, as sft_nll) − β·log σ(log-odds ratio); no reference."""
    log_odds = orpo_log_odds(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths)
    return sft_nll(chosen_logps, chosen_lengths) - beta * log_sigmoid(log_odds)


def kto_loss(
    policy_logps: mx.array,
    ref_logps: mx.array,
    desirable: mx.array,
    kl: mx.array,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> mx.array:
    """KTO per example (TRL's KTOTrainer, loss_type "kto"), with u = π − ref and the reference point z = `kl`:
      desirable    w_d·(1 − σ(β(u − z)))
      undesirable  w_u·(1 − σ(β(z − u)))
    `desirable` is 1.0/0.0 per example; `kl` a scalar, already clamped at 0 and without gradient (kto_reference_point).
    """
    u = policy_logps - ref_logps
    good = desirable_weight * (1 - mx.sigmoid(beta * (u - kl)))
    bad = undesirable_weight * (1 - mx.sigmoid(beta * (kl - u)))
    return desirable * good + (1 - desirable) * bad


def kto_reference_point(mismatched_logps: mx.array, ref_mismatched_logps: mx.array) -> mx.array:
    """KTO's z: the batch mean of π − ref over mismatched (prompt, other completion) pairs, ≥ 0, no gradient."""
    return mx.maximum(mx.stop_gradient((mismatched_logps - ref_mismatched_logps).mean()), 0.0)


def preference_loss(
    policy_chosen_logps: mx.array,
    policy_rejected_logps: mx.array,
    ref_chosen_logps: mx.array | None,
    ref_rejected_logps: mx.array | None,
    *,
    loss_type: str,
    beta: float,
    label_smoothing: float = TrainingArgs.label_smoothing,
    chosen_lengths: mx.array | None = None,
    rejected_lengths: mx.array | None = None,
    simpo_gamma: float = TrainingArgs.simpo_gamma,
    f_divergence_type: str = TrainingArgs.f_divergence_type,
    f_alpha_divergence_coef: float = TrainingArgs.f_alpha_divergence_coef,
    discopop_tau: float = TrainingArgs.discopop_tau,
) -> mx.array:
    """Per-pair losses of one loss type, shape (B,).

    With log-ratios u_c = π_c − ref_c, u_r = π_r − ref_r, scores s = f_scores(u) (= u for reverse_kl; another
    f-divergence is refused for the losses outside settings.F_DIVERGENCE_LOSSES, so nca_pair, bco_pair,
    sppo_hard, aot, aot_unpaired, apo_zero and apo_down only ever see s = u, as in TRL),
    Δ = s_c − s_r, ε = label_smoothing, L = completion token counts, as TRL 1.16 unless marked (ours):
      sigmoid       −logσ(βΔ)                                    DPO
      cdpo          −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)                (ours) conservative DPO: TRL 1.16's sigmoid dropped ε
      robust        (−(1−ε)·logσ(βΔ) + ε·logσ(−βΔ)) / (1−2ε)     unbiased under label-flip rate ε
      hinge         relu(1 − βΔ)                                 SLiC
      ipo           (s_c/L_c − s_r/L_r − 1/(2β))²                IPO on per-token scores
      exo_pair      q·(logq − log(1−ε)) + q̄·(logq̄ − log ε), q = σ(βΔ), q̄ = σ(−βΔ)   EXO (ε > 0)
      nca_pair      −logσ(βs_c) − ½logσ(−βs_c) − ½logσ(−βs_r)
      bco_pair      −logσ(βs_c) − logσ(−βs_r)
      sppo_hard     (s_c − 1/(2β))² + (s_r + 1/(2β))²
      aot           cdpo's form on δ = sort(π_c − π_r) − sort(ref_c − ref_r)   sorted within the batch
      aot_unpaired  cdpo's form on δ = sort(u_c) − sort(u_r)
      apo_zero      1 − σ(βu_c) + σ(βu_r)
      apo_down      σ(βu_c) + 1 − σ(βΔ)
      discopop      (1−m)·(−logσ(βΔ)) + m·e^(−βΔ), m = σ(βΔ/τ)
      sft           −Σπ_c/ΣL_c (chosen NLL, batch token mean)     no reference
      sigmoid_norm  −logσ(β(s_c/L_c − s_r/L_r))
      simpo         −logσ(β·(π_c/L_c − π_r/L_r) − γ)             (ours, TRL has it in CPO) no reference
      orpo          −Σπ_c/ΣL_c − β·logσ(orpo_log_odds)           (TRL's ORPOTrainer) no reference
    ipo, sigmoid_norm, simpo, sft and orpo need `chosen_lengths`/`rejected_lengths` (token counts, all > 0).
    """
    _check_arguments(
        loss_type,
        beta,
        label_smoothing,
        f_divergence_type,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_lengths,
        rejected_lengths,
    )
    return _pair_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        loss_type=loss_type,
        beta=beta,
        label_smoothing=label_smoothing,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
        simpo_gamma=simpo_gamma,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef,
        discopop_tau=discopop_tau,
    )


def _pair_loss(
    policy_chosen_logps: mx.array,
    policy_rejected_logps: mx.array,
    ref_chosen_logps: mx.array | None,
    ref_rejected_logps: mx.array | None,
    *,
    loss_type: str,
    beta: float,
    label_smoothing: float,
    chosen_lengths: mx.array | None,
    rejected_lengths: mx.array | None,
    simpo_gamma: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
    discopop_tau: float,
) -> mx.array:
    """preference_loss after its checks (combined_loss checks the settings once, for all its losses)."""
    _check_shapes(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=None if loss_type in REFERENCE_FREE else ref_chosen_logps,
        ref_rejected_logps=None if loss_type in REFERENCE_FREE else ref_rejected_logps,
        chosen_lengths=chosen_lengths if loss_type in _NEEDS_LENGTHS else None,
        rejected_lengths=rejected_lengths if loss_type in _NEEDS_LENGTHS else None,
    )
    pc, pr, lc, lr = policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths
    if loss_type == "simpo":
        return -log_sigmoid(simpo_rewards(pc, lc, beta) - simpo_rewards(pr, lr, beta) - simpo_gamma)
    if loss_type == "orpo":
        return orpo_loss(pc, pr, lc, lr, beta)
    if loss_type == "sft":
        return sft_nll(pc, lc)
    eps = label_smoothing
    u_c, u_r = pc - ref_chosen_logps, pr - ref_rejected_logps
    if loss_type == "aot":
        delta = mx.sort(pc - pr, axis=0) - mx.sort(ref_chosen_logps - ref_rejected_logps, axis=0)
        return _smoothed_sigmoid(beta * delta, eps)
    if loss_type == "aot_unpaired":
        return _smoothed_sigmoid(beta * (mx.sort(u_c, axis=0) - mx.sort(u_r, axis=0)), eps)
    if loss_type == "apo_zero":
        return 1 - mx.sigmoid(beta * u_c) + mx.sigmoid(beta * u_r)
    s_c = f_scores(u_c, f_divergence_type, f_alpha_divergence_coef)
    s_r = f_scores(u_r, f_divergence_type, f_alpha_divergence_coef)
    return _score_loss(loss_type, s_c, s_r, u_c, beta, eps, lc, lr, discopop_tau)


def _smoothed_sigmoid(logits: mx.array, eps: float) -> mx.array:
    return -(1 - eps) * log_sigmoid(logits) - eps * log_sigmoid(-logits)


def _score_loss(
    loss_type: str,
    s_c: mx.array,
    s_r: mx.array,
    u_c: mx.array,
    beta: float,
    eps: float,
    lc: mx.array | None,
    lr: mx.array | None,
    tau: float,
) -> mx.array:
    """The losses written on the f-scores s_c, s_r (see preference_loss's table)."""
    logits = beta * (s_c - s_r)
    if loss_type == "sigmoid":
        return -log_sigmoid(logits)
    if loss_type == "cdpo":
        return _smoothed_sigmoid(logits, eps)
    if loss_type == "robust":
        return (-(1 - eps) * log_sigmoid(logits) + eps * log_sigmoid(-logits)) / (1 - 2 * eps)
    if loss_type == "hinge":
        return mx.maximum(1 - logits, 0.0)
    if loss_type == "ipo":
        # IPO regresses the per-token margin onto 1/(2β) instead of pushing it to infinity.
        return (s_c / lc - s_r / lr - 1 / (2 * beta)) ** 2
    if loss_type == "sigmoid_norm":
        return -log_sigmoid(beta * (s_c / lc - s_r / lr))
    if loss_type == "exo_pair":
        q, q_bar = mx.sigmoid(logits), mx.sigmoid(-logits)
        return q * (log_sigmoid(logits) - mx.log1p(mx.array(-eps))) + q_bar * (
            log_sigmoid(-logits) - mx.log(mx.array(eps))
        )
    if loss_type == "nca_pair":
        return -log_sigmoid(beta * s_c) - 0.5 * log_sigmoid(-beta * s_c) - 0.5 * log_sigmoid(-beta * s_r)
    if loss_type == "bco_pair":
        return -log_sigmoid(beta * s_c) - log_sigmoid(-beta * s_r)
    if loss_type == "sppo_hard":
        return (s_c - 0.5 / beta) ** 2 + (s_r + 0.5 / beta) ** 2
    if loss_type == "apo_down":
        return mx.sigmoid(beta * u_c) + 1 - mx.sigmoid(logits)
    if loss_type == "discopop":
        # m·e^(−βΔ) as e^(log m − βΔ): the same number, but no 0·∞ where m underflows and e^(−βΔ) overflows.
        m = mx.sigmoid(logits / tau)
        return (1 - m) * -log_sigmoid(logits) + mx.exp(log_sigmoid(logits / tau) - logits)
    # kto is not a pair loss: its examples are single answers (kto_loss).
    raise ValueError(f"loss_type {loss_type!r} has no pair form; see kto_loss")


# The loss settings' defaults are TrainingArgs' (mlx_dpo.settings); the lengths are the batch's.
_DEFAULTS = {
    **{
        name: getattr(TrainingArgs, name)
        for name in ("label_smoothing", "simpo_gamma", "f_divergence_type", "f_alpha_divergence_coef", "discopop_tau")
    },
    "chosen_lengths": None,
    "rejected_lengths": None,
}


def combined_loss(
    policy_chosen_logps: mx.array,
    policy_rejected_logps: mx.array,
    ref_chosen_logps: mx.array | None,
    ref_rejected_logps: mx.array | None,
    *,
    loss_types: tuple[str, ...],
    loss_weights: tuple[float, ...] | None = None,
    pair_weights: mx.array | None = None,
    **options,
) -> mx.array:
    """Σₖ wₖ·lossₖ per pair (weights default to 1), each term times `pair_weights` (WPO) when given.

    The batch mean of this is TRL's Σₖ wₖ·mean(lossₖ). `options` are preference_loss's keywords.
    """
    weights = loss_weights or (1.0,) * len(loss_types)
    if len(weights) != len(loss_types):
        raise ValueError(f"{len(weights)} loss weights for {len(loss_types)} loss types")
    options = {**_DEFAULTS, **options}
    # label_smoothing applies to the losses that use it: checked once for the whole list.
    check_loss_settings(",".join(loss_types), options["beta"], options["label_smoothing"], options["f_divergence_type"])
    total = None
    for loss_type, weight in zip(loss_types, weights):
        _check_arrays(
            loss_type, ref_chosen_logps, ref_rejected_logps, options["chosen_lengths"], options["rejected_lengths"]
        )
        term = _pair_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            loss_type=loss_type,
            **options,
        )
        if pair_weights is not None:
            term = term * pair_weights
        total = weight * term if total is None else total + weight * term
    return total


def _check_arguments(
    loss_type: str,
    beta: float,
    label_smoothing: float,
    f_divergence_type: str,
    ref_chosen_logps: mx.array | None,
    ref_rejected_logps: mx.array | None,
    chosen_lengths: mx.array | None,
    rejected_lengths: mx.array | None,
) -> None:
    # The settings' own rules (known loss, beta > 0, label smoothing, f-divergence) are TrainingArgs'; the arrays'
    # are here.
    check_loss_settings(loss_type, beta, label_smoothing, f_divergence_type)
    _check_arrays(loss_type, ref_chosen_logps, ref_rejected_logps, chosen_lengths, rejected_lengths)


def _check_arrays(
    loss_type: str,
    ref_chosen_logps: mx.array | None,
    ref_rejected_logps: mx.array | None,
    chosen_lengths: mx.array | None,
    rejected_lengths: mx.array | None,
) -> None:
    if loss_type not in REFERENCE_FREE and (ref_chosen_logps is None or ref_rejected_logps is None):
        raise ValueError(
            f"loss_type {loss_type!r} needs reference log-probs (only {', '.join(REFERENCE_FREE)} are reference-free)"
        )
    if loss_type in _NEEDS_LENGTHS and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError(f"loss_type {loss_type!r} needs chosen_lengths and rejected_lengths (completion token counts)")


def _check_shapes(**arrays: mx.array | None) -> None:
    # Shapes are known without evaluating anything, so this check is free even inside mx.compile.
    given = {name: a for name, a in arrays.items() if a is not None}
    expected = given["policy_chosen_logps"].shape
    for name, a in given.items():
        if a.ndim != 1 or a.shape != expected:
            raise ValueError(f"{name} has shape {tuple(a.shape)}; all inputs must have shape (B,) = {tuple(expected)}")
