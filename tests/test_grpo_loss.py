"""Specification of the GRPO objective (training/grpo_loss.py), checked against numbers worked out by hand with
`math`, and its gradient on a tiny real model against the policy-gradient identity it must reduce to."""

import math

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import pytest

from mlx_dpo.training.grpo_loss import group_advantages, grpo_loss, varied_groups

# One group of rewards [1, 2, 3, 6]: mean 3, population std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5).
REWARDS = [1.0, 2.0, 3.0, 6.0]


def test_advantages_are_centred_and_scaled_by_the_groups_std_or_only_centred():
    std = math.sqrt(3.5)
    got = group_advantages(mx.array([REWARDS]), "std").tolist()[0]
    assert got == pytest.approx([(r - 3) / (std + 1e-4) for r in REWARDS], rel=1e-6)
    assert group_advantages(mx.array([REWARDS]), "mean").tolist()[0] == pytest.approx([-2, -1, 0, 3])


def test_a_group_with_equal_rewards_is_dropped_and_its_advantages_are_zero():
    rewards = mx.array([[0.5, 0.5, 0.5], [0.0, 1.0, 1.0]])
    assert varied_groups(rewards).tolist() == [False, True]
    assert group_advantages(rewards, "std").tolist()[0] == [0.0, 0.0, 0.0]


# Two answers: answer 0 has 2 tokens, answer 1 has 3 (one padding slot in a width-3 batch).
#   answer 0: A = +1, token log-ratios (π − old) = [log 1.5, log 0.9]     -> ratios 1.5, 0.9
#   answer 1: A = −2, token log-ratios           = [log 0.5, log 1.1, 0] -> ratios 0.5, 1.1, 1.0
# With ε = 0.2 (clip to [0.8, 1.2]):
#   answer 0 (A > 0): min(ρA, clip(ρ)A) = min(1.5, 1.2) = 1.2 (clipped), min(0.9, 0.9) = 0.9   -> ℓ = −1.2, −0.9
#   answer 1 (A < 0): min(−1.0, −1.6) = −1.6 (clipped), min(−2.2, −2.2) = −2.2, min(−2, −2) = −2 -> ℓ = 1.6, 2.2, 2.0
# Unclipped (ε huge): ℓ0 = −1.5, −0.9; ℓ1 = 1.0, 2.2, 2.0.
OLD = [[-1.0, -2.0, 0.0], [-0.5, -1.5, -0.7]]
RATIOS = [[1.5, 0.9, 1.0], [0.5, 1.1, 1.0]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
ADV = [1.0, -2.0]
CLIPPED = ([-1.2, -0.9], [1.6, 2.2, 2.0])
UNCLIPPED = ([-1.5, -0.9], [1.0, 2.2, 2.0])


def _loss(normalize: str, epsilon: float = 0.2, **kwargs):
    logps = [
        [o + math.log(r) if m else 0.0 for o, r, m in zip(orow, rrow, mrow)]
        for orow, rrow, mrow in zip(OLD, RATIOS, MASK)
    ]
    return grpo_loss(
        mx.array(logps),
        mx.array(OLD),
        mx.array(ADV),
        mx.array(MASK),
        epsilon=epsilon,
        normalize=normalize,
        max_tokens=4,
        **kwargs,
    )


@pytest.mark.parametrize("case, epsilon", [(CLIPPED, 0.2), (UNCLIPPED, 100.0)], ids=["clipped", "unclipped"])
def test_each_normalisation_matches_the_hand_computation(case, epsilon):
    first, second = case
    by_sequence = (sum(first) / 2 + sum(second) / 3) / 2  # GRPO: each answer's token mean, then the mean
    by_token = (sum(first) + sum(second)) / 5  # DAPO: every real token counts once
    by_constant = (sum(first) + sum(second)) / (2 * 4)  # Dr. GRPO: n answers times the sampler's max tokens
    for normalize, expected in (("sequence", by_sequence), ("token", by_token), ("constant", by_constant)):
        loss, _ = _loss(normalize, epsilon)
        assert loss.item() == pytest.approx(expected, rel=1e-5), normalize


def test_clip_metrics_count_the_tokens_whose_ratio_left_the_range_in_the_advantages_direction():
    _, metrics = _loss("token")
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 5)  # ρ 1.5 with A > 0, ρ 0.5 with A < 0
    assert metrics["ratio"].item() == pytest.approx((1.5 + 0.9 + 0.5 + 1.1 + 1.0) / 5, rel=1e-5)


def test_the_kl_term_is_beta_times_half_the_squared_sequence_log_ratio_per_token():
    # Sequence log-probs under the policy: answer 0: log(1.5)-1 + log(0.9)-2, answer 1: log(.5)-.5 + log(1.1)-1.5 - .7
    pi = [math.log(1.5) - 1 + math.log(0.9) - 2, math.log(0.5) - 0.5 + math.log(1.1) - 1.5 - 0.7]
    ref = [-3.0, -4.0]
    kl = [0.5 * (pi[0] - ref[0]) ** 2 / 2, 0.5 * (pi[1] - ref[1]) ** 2 / 3]
    plain, _ = _loss("sequence")
    with_kl, metrics = _loss("sequence", beta=0.1, ref_logps=mx.array(ref))
    assert with_kl.item() == pytest.approx(plain.item() + 0.1 * sum(kl) / 2, rel=1e-5)
    assert metrics["kl"].item() == pytest.approx(sum(kl) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="reference"):
        _loss("sequence", beta=0.1)


def test_the_gradient_on_a_real_model_is_the_policy_gradient_at_ratio_one_and_zero_where_clipped(tiny_loaded):
    """At the first step (old = π) the clipped objective's gradient is REINFORCE's: −(1/n) Σ_i A_i/|y_i| Σ_t ∇logπ_it.
    With old log-probs far below π on an answer of positive advantage, that answer is clipped and adds nothing."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from mlx_dpo.training.batching import make_batch
    from mlx_dpo.training.logprobs import token_logps

    model = tiny_loaded.model
    batch = make_batch([([1, 2, 3], [4, 5, 6]), ([1, 2, 3], [7, 8]), ([1, 9], [10, 11, 12, 13])])
    adv = mx.array([1.0, -0.5, 0.25])
    old = mx.stop_gradient(token_logps(model, batch))

    def grads(fn):
        return dict(tree_flatten(nn.value_and_grad(model, fn)()[1]))

    def clipped():
        return grpo_loss(token_logps(model, batch), old, adv, batch.mask, normalize="sequence")[0]

    def reinforce():
        lp = token_logps(model, batch)
        return -(adv * lp.sum(axis=-1) / batch.mask.sum(axis=-1)).mean()

    got, want = grads(clipped), grads(reinforce)
    assert got.keys() == want.keys() and any(mx.abs(g).max().item() > 0 for g in want.values())
    for name in want:
        assert mx.allclose(got[name], want[name], atol=1e-6, rtol=1e-4).item(), name
    # Answer 0's ratio exp(3) is past 1 + ε with A > 0: clipped, so only answers 1 and 2 move the model.
    far = old - mx.array([[3.0], [0.0], [0.0]]) * batch.mask

    def clipped_far():
        return grpo_loss(token_logps(model, batch), far, adv * mx.array([1.0, 0.0, 0.0]), batch.mask)[0]

    assert all(mx.abs(g).max().item() == 0 for g in grads(clipped_far).values())
