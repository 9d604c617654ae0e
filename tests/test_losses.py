"""Specification of the preference losses, checked against numbers worked out by hand with `math`."""

import math

import mlx_dpo  # noqa: F401  (must come before mlx.core: it picks the BLAS)
import mlx.core as mx
import pytest

from mlx_dpo.training.losses import LOSS_TYPES, implicit_rewards, preference_loss, rpo_nll, simpo_rewards

# Two pairs. Pair 0: chosen ratio c = -10 - (-11) = 1, rejected ratio r = -14 - (-12) = -2, Δ = 3.
#            Pair 1: c = -20 - (-18) = -2,        r = -15 - (-16) = 1,          Δ = -3.
PI_C = [-10.0, -20.0]
PI_R = [-14.0, -15.0]
REF_C = [-11.0, -18.0]
REF_R = [-12.0, -16.0]
LEN_C = [5, 4]
LEN_R = [8, 2]
BETA = 0.1


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def loss(loss_type, *, pi_c=PI_C, pi_r=PI_R, ref_c=REF_C, ref_r=REF_R, **kwargs):
    kwargs.setdefault("beta", BETA)
    arrays = [None if v is None else mx.array(v) for v in (pi_c, pi_r, ref_c, ref_r)]
    return preference_loss(*arrays, loss_type=loss_type, **kwargs)


def lengths():
    return {"chosen_lengths": mx.array(LEN_C), "rejected_lengths": mx.array(LEN_R)}


def close(actual: mx.array, expected: list[float]) -> bool:
    return actual.shape == (len(expected),) and actual.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


# --- values -----------------------------------------------------------------------------------------------


def test_sigmoid_is_dpo_softplus_of_minus_beta_delta():
    # −logσ(x) = softplus(−x); βΔ = 0.3 and −0.3
    assert close(loss("sigmoid"), [softplus(-0.3), softplus(0.3)])


def test_sigmoid_with_label_smoothing_is_conservative_dpo():
    # 0.8·softplus(−βΔ) + 0.2·softplus(βΔ)
    expected = [0.8 * softplus(-0.3) + 0.2 * softplus(0.3), 0.8 * softplus(0.3) + 0.2 * softplus(-0.3)]
    assert close(loss("sigmoid", label_smoothing=0.2), expected)


def test_robust_equals_sigmoid_at_zero_smoothing():
    assert close(loss("robust"), [softplus(-0.3), softplus(0.3)])


def test_robust_with_label_smoothing():
    # (0.8·softplus(−βΔ) − 0.2·softplus(βΔ)) / 0.6
    expected = [
        (0.8 * softplus(-0.3) - 0.2 * softplus(0.3)) / 0.6,
        (0.8 * softplus(0.3) - 0.2 * softplus(-0.3)) / 0.6,
    ]
    assert close(loss("robust", label_smoothing=0.2), expected)


def test_hinge_is_relu_of_one_minus_beta_delta():
    # βΔ = 0.3 → 0.7; βΔ = -0.3 → 1.3; with β = 1, Δ = 3 clears the margin → 0
    assert close(loss("hinge"), [0.7, 1.3])
    assert close(loss("hinge", beta=1.0), [0.0, 4.0])


def test_ipo_regresses_per_token_margin_onto_half_inverse_beta():
    # pair 0: 1/5 − (−2)/8 − 1/(2·0.1) = 0.2 + 0.25 − 5 = −4.55
    # pair 1: −2/4 − 1/2 − 5 = −6
    assert close(loss("ipo", **lengths()), [4.55**2, 36.0])


def test_simpo_uses_length_normalised_policy_logps_and_no_reference():
    # pair 0: 0.1·(−10/5 − (−14/8)) − 0.5 = 0.1·(−0.25) − 0.5 = −0.525
    # pair 1: 0.1·(−20/4 − (−15/2)) − 0.5 = 0.1·2.5 − 0.5 = −0.25
    expected = [softplus(0.525), softplus(0.25)]
    assert close(loss("simpo", ref_c=None, ref_r=None, **lengths()), expected)
    assert close(loss("simpo", **lengths()), expected)  # reference values, if passed, are ignored


def test_simpo_gamma_shifts_the_margin():
    # margin −0.025 − 0 and 0.25 − 0
    out = loss("simpo", ref_c=None, ref_r=None, simpo_gamma=0.0, **lengths())
    assert close(out, [softplus(0.025), softplus(-0.25)])


def test_reward_helpers():
    assert close(implicit_rewards(mx.array(PI_C), mx.array(REF_C), BETA), [0.1, -0.2])
    assert close(simpo_rewards(mx.array(PI_C), mx.array(LEN_C), BETA), [-0.2, -0.5])
    assert close(rpo_nll(mx.array(PI_C), mx.array(LEN_C)), [2.0, 5.0])


# --- behaviour --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_a_pair_where_the_policy_favours_chosen_more_has_lower_loss(loss_type):
    # Same rejected side; the policy gives the chosen answer 2 nats more in the first pair than in the second.
    out = loss(loss_type, pi_c=[-8.0, -10.0], pi_r=[-12.0, -12.0], ref_c=[-10.0, -10.0], ref_r=[-12.0, -12.0],
               chosen_lengths=mx.array([4, 4]), rejected_lengths=mx.array([4, 4]))
    first, second = out.tolist()
    assert first < second


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "ipo", "simpo"])
def test_gradient_pushes_chosen_logps_up(loss_type):
    # Descending the loss must raise the chosen log-prob: d(mean loss)/d(π_c) < 0.
    def mean_loss(pi_c):
        return preference_loss(pi_c, mx.array(PI_R), mx.array(REF_C), mx.array(REF_R), loss_type=loss_type,
                               beta=BETA, **lengths()).mean()

    grad = mx.grad(mean_loss)(mx.array(PI_C))
    assert all(g < 0 for g in grad.tolist())


def test_sigmoid_gradient_matches_hand_derivative():
    # d/dπ_c of mean softplus(−βΔ) = −β·σ(−βΔ)/B
    grad = mx.grad(lambda pi_c: loss("sigmoid", pi_c=pi_c).mean())(mx.array(PI_C))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert close(grad, [-0.1 * sig(-0.3) / 2, -0.1 * sig(0.3) / 2])


@pytest.mark.parametrize(
    "loss_type, label_smoothing", [(t, 0.0) for t in LOSS_TYPES] + [("sigmoid", 0.2), ("robust", 0.2)]
)
def test_huge_margins_stay_finite(loss_type, label_smoothing):
    def mean_loss(pi_c):
        return preference_loss(pi_c, mx.zeros(2), mx.zeros(2), mx.zeros(2), loss_type=loss_type, beta=1.0,
                               label_smoothing=label_smoothing, chosen_lengths=mx.ones(2),
                               rejected_lengths=mx.ones(2)).mean()

    pi_c = mx.array([1000.0, -1000.0])  # Δ = ±1000
    value, grad = mx.value_and_grad(mean_loss)(pi_c)
    assert math.isfinite(value.item())
    assert all(math.isfinite(g) for g in grad.tolist())


def test_sigmoid_at_huge_margins_is_zero_and_linear():
    out = loss("sigmoid", pi_c=[1000.0, -1000.0], pi_r=[0.0, 0.0], ref_c=[0.0, 0.0], ref_r=[0.0, 0.0], beta=1.0)
    assert close(out, [0.0, 1000.0])


# --- argument errors --------------------------------------------------------------------------------------


def test_unknown_loss_type_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss_type 'dpo'.*sigmoid, robust, hinge, ipo, simpo"):
        loss("dpo")


@pytest.mark.parametrize("loss_type", ["ipo", "simpo"])
def test_length_normalised_losses_need_lengths(loss_type):
    with pytest.raises(ValueError, match="needs chosen_lengths and rejected_lengths"):
        loss(loss_type, chosen_lengths=mx.array(LEN_C))


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "hinge", "ipo"])
def test_reference_losses_need_reference_logps(loss_type):
    with pytest.raises(ValueError, match="needs reference log-probs"):
        loss(loss_type, ref_r=None, **lengths())


@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7])
@pytest.mark.parametrize("loss_type", ["sigmoid", "robust"])
def test_label_smoothing_must_be_below_one_half(loss_type, eps):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        loss(loss_type, label_smoothing=eps)


@pytest.mark.parametrize("loss_type", ["hinge", "ipo", "simpo"])
def test_label_smoothing_is_refused_where_it_would_be_ignored(loss_type):
    with pytest.raises(ValueError, match="label_smoothing applies only to"):
        loss(loss_type, label_smoothing=0.1, **lengths())


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_beta_must_be_positive(beta):
    with pytest.raises(ValueError, match="beta must be > 0"):
        loss("sigmoid", beta=beta)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"ref_rejected_logps has shape \(3,\)"):
        loss("sigmoid", ref_r=[0.0, 0.0, 0.0])
