"""Preference losses: turn summed completion log-probs of chosen/rejected pairs into per-pair losses.

Every function is pure MLX (no evaluation, no Python branching on array values), so it can sit inside
`mx.grad` or `mx.compile`. Inputs are shape (B,): one summed log-prob (or token count) per pair.
The loss names (LOSS_TYPES) and the rules on beta and label smoothing are settings, in mlx_dpo.settings.
"""

from __future__ import annotations

import mlx.core as mx

from mlx_dpo.settings import LOSS_TYPES, check_loss_settings

__all__ = ["LOSS_TYPES", "implicit_rewards", "log_sigmoid", "preference_loss", "rpo_nll", "simpo_rewards"]

_NEEDS_LENGTHS = ("ipo", "simpo")


def log_sigmoid(x: mx.array) -> mx.array:
    """log σ(x) = −softplus(−x), written with logaddexp so it stays finite for |x| in the thousands."""
    return -mx.logaddexp(0.0, -x)


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


def preference_loss(
    policy_chosen_logps: mx.array,
    policy_rejected_logps: mx.array,
    ref_chosen_logps: mx.array | None,
    ref_rejected_logps: mx.array | None,
    *,
    loss_type: str,
    beta: float,
    label_smoothing: float = 0.0,
    chosen_lengths: mx.array | None = None,
    rejected_lengths: mx.array | None = None,
    simpo_gamma: float = 0.5,
) -> mx.array:
    """Per-pair losses, shape (B,): lower the more the policy favours chosen over rejected, relative to the reference.

    With c = π_c − ref_c, r = π_r − ref_r, Δ = c − r and ε = label_smoothing:
      sigmoid  −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)             DPO; with ε > 0 conservative DPO (labels may be wrong)
      robust   (−(1−ε)·logσ(βΔ) + ε·logσ(−βΔ)) / (1−2ε)  robust DPO: unbiased under label noise rate ε
      hinge    relu(1 − βΔ)                               SLiC-style hinge
      ipo      (c/L_c − r/L_r − 1/(2β))²                  IPO on per-token log-ratios
      simpo    −logσ(β·(π_c/L_c − π_r/L_r) − γ)           SimPO; reference-free, the ref arguments are ignored
    ipo and simpo need `chosen_lengths` and `rejected_lengths` (completion token counts, all > 0).
    """
    _check_arguments(
        loss_type, beta, label_smoothing, ref_chosen_logps, ref_rejected_logps, chosen_lengths, rejected_lengths
    )
    _check_shapes(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=None if loss_type == "simpo" else ref_chosen_logps,
        ref_rejected_logps=None if loss_type == "simpo" else ref_rejected_logps,
        chosen_lengths=chosen_lengths if loss_type in _NEEDS_LENGTHS else None,
        rejected_lengths=rejected_lengths if loss_type in _NEEDS_LENGTHS else None,
    )

    if loss_type == "simpo":
        margin = simpo_rewards(policy_chosen_logps, chosen_lengths, beta) - simpo_rewards(
            policy_rejected_logps, rejected_lengths, beta
        )
        return -log_sigmoid(margin - simpo_gamma)

    chosen_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    if loss_type == "ipo":
        # IPO regresses the per-token margin onto 1/(2β) instead of pushing it to infinity.
        return (chosen_ratio / chosen_lengths - rejected_ratio / rejected_lengths - 1 / (2 * beta)) ** 2

    logits = beta * (chosen_ratio - rejected_ratio)
    eps = label_smoothing
    if loss_type == "sigmoid":
        return -(1 - eps) * log_sigmoid(logits) - eps * log_sigmoid(-logits)
    if loss_type == "robust":
        return (-(1 - eps) * log_sigmoid(logits) + eps * log_sigmoid(-logits)) / (1 - 2 * eps)
    return mx.maximum(1 - logits, 0.0)  # hinge


def _check_arguments(
    loss_type: str,
    beta: float,
    label_smoothing: float,
    ref_chosen_logps: mx.array | None,
    ref_rejected_logps: mx.array | None,
    chosen_lengths: mx.array | None,
    rejected_lengths: mx.array | None,
) -> None:
    # The settings' own rules (known loss, beta > 0, label smoothing) are TrainingArgs'; the arrays' are here.
    check_loss_settings(loss_type, beta, label_smoothing)
    if loss_type != "simpo" and (ref_chosen_logps is None or ref_rejected_logps is None):
        raise ValueError(f"loss_type {loss_type!r} needs reference log-probs (only 'simpo' is reference-free)")
    if loss_type in _NEEDS_LENGTHS and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError(f"loss_type {loss_type!r} needs chosen_lengths and rejected_lengths (completion token counts)")


def _check_shapes(**arrays: mx.array | None) -> None:
    # Shapes are known without evaluating anything, so this check is free even inside mx.compile.
    given = {name: a for name, a in arrays.items() if a is not None}
    expected = given["policy_chosen_logps"].shape
    for name, a in given.items():
        if a.ndim != 1 or a.shape != expected:
            raise ValueError(f"{name} has shape {tuple(a.shape)}; all inputs must have shape (B,) = {tuple(expected)}")
