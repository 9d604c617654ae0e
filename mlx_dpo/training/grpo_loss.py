"""The GRPO objective: group-relative advantages and the clipped policy-gradient loss on sampled answers.

Pure MLX (no evaluation, no Python branching on array values), so `grpo_loss` sits inside `mx.grad`. Which
groups train, and the old policy's log-probs, are decided on the host (training/grpo.py).

A prompt's group holds G sampled answers y_1..y_G with rewards r_i. For token t of answer i: logπ_it under the
policy being trained, logπold_it under the model that sampled the group (the round's starting version: the
"old policy" of PPO), m_it = 1 on real tokens, |y_i| = Σ_t m_it. n answers in the batch, L the sampler's
max tokens.

  advantage ("std")   A_i = (r_i − mean_j r_j) / (std_j r_j + 1e-4)      GRPO (DeepSeekMath); population std, as TRL
  advantage ("mean")  A_i =  r_i − mean_j r_j                             Dr. GRPO: no std, so a group whose rewards
                                                                          barely differ is not blown up
  ratio               ρ_it = exp(logπ_it − logπold_it)                    1 at the first step on fresh samples
  token loss          ℓ_it = −min(ρ_it·A_i, clip(ρ_it, 1 − ε, 1 + ε_high)·A_i)   PPO's clipped surrogate
  "sequence" (GRPO)   loss = (1/n) Σ_i (1/|y_i|) Σ_t m_it·ℓ_it
  "token"    (DAPO)   loss = Σ_it m_it·ℓ_it / Σ_it m_it                  long answers weigh by their tokens
  "constant" (Dr.)    loss = Σ_it m_it·ℓ_it / (n·L)                      no length bias at all
  KL (β > 0)          + β·(1/n) Σ_i ½·(logπ(y_i) − logref(y_i))² / |y_i|

The KL term is per answer because the reference cache (ref_cache.py) keeps a completion's summed log-prob, as
DPO needs it: ½·(log π(y)/ref(y))² is Schulman's k2 estimator, whose gradient (log π(y)/ref(y))·∇log π(y) is that of
KL(π‖ref) over whole answers drawn from π; dividing by |y_i| puts it on the per-token scale of TRL's β (k3 per
token, averaged). With β = 0 (the default) the term is absent and no reference is needed at all.

A group whose rewards are all equal has A = 0 everywhere and teaches nothing but would still count in the
normalisers: it is dropped before batching (`varied_groups`), as DAPO's dynamic sampling drops it.
"""

from __future__ import annotations

import mlx.core as mx

from mlx_dpo.group_settings import ADVANTAGES, NORMALISATIONS  # --grpo-advantage, --grpo-normalize

STD_EPSILON = 1e-4  # TRL's: keeps a near-constant group's advantages finite

__all__ = [
    "ADVANTAGES",
    "NORMALISATIONS",
    "clipped_token_losses",
    "group_advantages",
    "grpo_loss",
    "normalised",
    "sequence_kl",
    "varied_groups",
]


def group_advantages(rewards: mx.array, scale: str = "std") -> mx.array:
    """(N, G) advantages of N groups of G rewards each: minus the group's mean, divided by its std with "std"."""
    centred = rewards - rewards.mean(axis=-1, keepdims=True)
    if scale == "mean":
        return centred
    if scale == "std":
        return centred / (mx.sqrt((centred * centred).mean(axis=-1, keepdims=True)) + STD_EPSILON)
    raise ValueError(f"unknown advantage scale {scale!r}; choose from {', '.join(ADVANTAGES)}")


def varied_groups(rewards: mx.array) -> mx.array:
    """(N,) True for a group whose rewards are not all equal: the groups that train (DAPO's dynamic sampling)."""
    return rewards.max(axis=-1) > rewards.min(axis=-1)


def clipped_token_losses(
    logps: mx.array,
    old_logps: mx.array,
    advantages: mx.array,
    mask: mx.array,
    epsilon: float,
    epsilon_high: float | None = None,
) -> mx.array:
    """(B, C) per-token clipped surrogate losses ℓ_it (0 at padding); `advantages` is (B,), one per answer."""
    ratio = mx.exp(logps - old_logps)
    high = epsilon if epsilon_high is None else epsilon_high
    a = advantages[:, None]
    return -mx.minimum(ratio * a, mx.clip(ratio, 1 - epsilon, 1 + high) * a) * mask


def normalised(token_losses: mx.array, mask: mx.array, normalize: str, max_tokens: int) -> mx.array:
    """The batch's loss from its per-token losses, by the normalisation's row of the table."""
    if normalize == "sequence":
        return (token_losses.sum(axis=-1) / mx.maximum(mask.sum(axis=-1), 1)).mean()
    if normalize == "token":
        return token_losses.sum() / mx.maximum(mask.sum(), 1)
    if normalize == "constant":
        return token_losses.sum() / (token_losses.shape[0] * max_tokens)
    raise ValueError(f"unknown normalisation {normalize!r}; choose from {', '.join(NORMALISATIONS)}")


def sequence_kl(logps: mx.array, ref_logps: mx.array, mask: mx.array) -> mx.array:
    """(B,) the KL term per answer: ½·(logπ(y) − logref(y))² / |y|, from (B, C) policy token log-probs and (B,)
    summed reference log-probs."""
    delta = logps.sum(axis=-1) - ref_logps
    return 0.5 * delta * delta / mx.maximum(mask.sum(axis=-1), 1)


def grpo_loss(
    logps: mx.array,
    old_logps: mx.array,
    advantages: mx.array,
    mask: mx.array,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    normalize: str = "sequence",
    max_tokens: int = 1,
    beta: float = 0.0,
    ref_logps: mx.array | None = None,
) -> tuple[mx.array, dict[str, mx.array]]:
    """The batch's GRPO loss (the module's table) and its metrics: the share of tokens clipped, the mean ratio
    and, with β > 0, the mean KL term. `logps`, `old_logps`, `mask`: (B, C); `advantages`, `ref_logps`: (B,)."""
    tokens = clipped_token_losses(logps, old_logps, advantages, mask, epsilon, epsilon_high)
    loss = normalised(tokens, mask, normalize, max_tokens)
    ratio = mx.exp(logps - old_logps)
    high = epsilon if epsilon_high is None else epsilon_high
    clipped = ((ratio < 1 - epsilon) & (advantages[:, None] < 0)) | ((ratio > 1 + high) & (advantages[:, None] > 0))
    count = mx.maximum(mask.sum(), 1)
    metrics = {"clip_fraction": (clipped * mask).sum() / count, "ratio": (ratio * mask).sum() / count}
    if beta > 0:
        if ref_logps is None:
            raise ValueError("a KL term (beta > 0) needs the reference log-probs")
        kl = sequence_kl(logps, ref_logps, mask)
        loss = loss + beta * kl.mean()
        metrics["kl"] = kl.mean()
    return loss, metrics
