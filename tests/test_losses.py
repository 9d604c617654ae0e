"""Specification of the preference losses, checked against numbers worked out by hand with `math`."""

import math

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import pytest

from mlx_dpo.settings import LOSS_TYPES, TrainingArgs
from mlx_dpo.training.losses import (
    combined_loss,
    f_scores,
    implicit_rewards,
    kto_loss,
    kto_reference_point,
    orpo_log_odds,
    preference_loss,
    rpo_nll,
    simpo_rewards,
    wpo_weights,
)

PAIR_LOSSES = [t for t in LOSS_TYPES if t != "kto"]

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


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def logsig(x: float) -> float:
    return -softplus(-x)


# Per pair: u_c = π_c − ref_c and u_r = π_r − ref_r; pair 0 has Δ = 3, pair 1 Δ = −3.
U_C = [1.0, -2.0]
U_R = [-2.0, 1.0]


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


def test_cdpo_is_sigmoid_with_label_smoothing_conservative_dpo():
    # 0.8·softplus(−βΔ) + 0.2·softplus(βΔ): TRL 1.16's sigmoid has no ε, so conservative DPO has its own name.
    expected = [0.8 * softplus(-0.3) + 0.2 * softplus(0.3), 0.8 * softplus(0.3) + 0.2 * softplus(-0.3)]
    assert close(loss("cdpo", label_smoothing=0.2), expected)
    assert close(loss("cdpo"), [softplus(-0.3), softplus(0.3)])


def test_exo_pair_is_the_kl_from_the_smoothed_label_distribution():
    # q = σ(βΔ): q·(log q − log(1−ε)) + (1−q)·(log(1−q) − log ε)
    for eps in (1e-3, 0.2):
        expected = [
            sig(x) * (logsig(x) - math.log(1 - eps)) + sig(-x) * (logsig(-x) - math.log(eps)) for x in (0.3, -0.3)
        ]
        assert close(loss("exo_pair", label_smoothing=eps), expected)


def test_nca_pair_scores_each_answer_on_its_own():
    # −logσ(βu_c) − ½logσ(−βu_c) − ½logσ(−βu_r)
    expected = [-logsig(0.1 * c) - 0.5 * logsig(-0.1 * c) - 0.5 * logsig(-0.1 * r) for c, r in zip(U_C, U_R)]
    assert close(loss("nca_pair"), expected)


def test_bco_pair_pushes_chosen_reward_up_and_rejected_down():
    expected = [-logsig(0.1 * c) - logsig(-0.1 * r) for c, r in zip(U_C, U_R)]
    assert close(loss("bco_pair"), expected)


def test_sppo_hard_regresses_each_log_ratio_onto_plus_minus_half_inverse_beta():
    # (u_c − 5)² + (u_r + 5)²: (1−5)² + (−2+5)² = 25; (−2−5)² + (1+5)² = 85
    assert close(loss("sppo_hard"), [25.0, 85.0])


def test_aot_sorts_policy_and_reference_margins_within_the_batch():
    # π_c − π_r = [4, −5, 1] sorted [−5, 1, 4]; ref_c − ref_r = [1, −2, 0] sorted [−2, 0, 1]; δ = [−3, 1, 3]
    arrays = dict(
        pi_c=[-10.0, -20.0, -5.0], pi_r=[-14.0, -15.0, -6.0], ref_c=[-11.0, -18.0, -7.0], ref_r=[-12.0, -16.0, -7.0]
    )
    assert close(loss("aot", **arrays), [softplus(0.3), softplus(-0.1), softplus(-0.3)])
    eps = 0.2  # the cdpo form on the sorted δ
    expected = [0.8 * softplus(-x) + 0.2 * softplus(x) for x in (-0.3, 0.1, 0.3)]
    assert close(loss("aot", label_smoothing=eps, **arrays), expected)


def test_aot_unpaired_sorts_chosen_and_rejected_log_ratios_apart():
    # u_c = [1, −2] sorted [−2, 1]; u_r = [−2, 1] sorted [−2, 1]; δ = [0, 0]
    assert close(loss("aot_unpaired"), [math.log(2), math.log(2)])
    out = loss(
        "aot_unpaired",
        pi_c=[-10.0, -20.0, 0.0],
        pi_r=[-14.0, -15.0, 0.0],
        ref_c=[-11.0, -18.0, -3.0],
        ref_r=[-12.0, -16.0, 0.0],
    )
    # u_c = [1, −2, 3] sorted [−2, 1, 3]; u_r = [−2, 1, 0] sorted [−2, 0, 1]; δ = [0, 1, 2]
    assert close(out, [softplus(0.0), softplus(-0.1), softplus(-0.2)])


def test_apo_zero_raises_chosen_and_lowers_rejected_likelihood():
    expected = [1 - sig(0.1 * c) + sig(0.1 * r) for c, r in zip(U_C, U_R)]
    assert close(loss("apo_zero"), expected)


def test_apo_down_lowers_chosen_and_rejected_more():
    expected = [sig(0.1 * c) + 1 - sig(0.1 * (c - r)) for c, r in zip(U_C, U_R)]
    assert close(loss("apo_down"), expected)


def test_discopop_blends_logistic_and_exponential_by_the_margin():
    for tau in (0.05, 1.0):
        expected = [(1 - sig(x / tau)) * softplus(-x) + sig(x / tau) * math.exp(-x) for x in (0.3, -0.3)]
        assert close(loss("discopop", discopop_tau=tau), expected)


def test_sft_is_the_batch_token_mean_nll_of_the_chosen_answers():
    # −(−10 − 20) / (5 + 4) for every pair; no reference needed
    assert close(loss("sft", ref_c=None, ref_r=None, **lengths()), [30 / 9, 30 / 9])
    assert close(loss("sft", pi_c=[-9.0, -1.0], ref_c=None, ref_r=None, **lengths()), [10 / 9, 10 / 9])


def test_sigmoid_norm_is_dpo_on_per_token_log_ratios():
    # u_c/L_c − u_r/L_r: 1/5 + 2/8 = 0.45; −2/4 − 1/2 = −1
    assert close(loss("sigmoid_norm", **lengths()), [softplus(-0.045), softplus(0.1)])


def test_orpo_is_chosen_nll_minus_beta_log_sigmoid_of_the_log_odds_ratio():
    def log_odds(c, r):  # on per-token means: log(p/(1−p)) of each
        return (c - math.log1p(-math.exp(c))) - (r - math.log1p(-math.exp(r)))

    pc, pr = [c / n for c, n in zip(PI_C, LEN_C)], [r / n for r, n in zip(PI_R, LEN_R)]
    nll = 30 / 9
    assert close(
        orpo_log_odds(mx.array(PI_C), mx.array(PI_R), mx.array(LEN_C), mx.array(LEN_R)),
        [log_odds(c, r) for c, r in zip(pc, pr)],
    )
    for beta in (0.1, 0.5):
        expected = [nll - beta * logsig(log_odds(c, r)) for c, r in zip(pc, pr)]
        assert close(loss("orpo", ref_c=None, ref_r=None, beta=beta, **lengths()), expected)


# f'(t) at t = π/ref = e^u, with its constants, written from the f-DPO paper's table (TRL 1.16's scores).
def f_prime(divergence: str, u: float, alpha: float = 0.5) -> float:
    t = math.exp(u)
    return {
        "reverse_kl": math.log(t),
        "forward_kl": 1 - 1 / t,
        "js_divergence": math.log(2 * t / (1 + t)),
        "alpha_divergence": (t ** (alpha - 1) - 1) / (alpha - 1),
    }[divergence]


DIVERGENCES = ["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"]
EPS = 0.1  # label smoothing of cdpo, robust and exo_pair in the table below
TAU = 0.05


def formula(loss_type: str, divergence: str) -> list[float]:
    """TRL 1.16's DPOTrainer loss per pair, from the scores s = f'(t) of the two pairs above, in plain Python."""
    out = []
    for c, r, lc, lr, _pc in zip(U_C, U_R, LEN_C, LEN_R, PI_C):
        sc, sr = f_prime(divergence, c), f_prime(divergence, r)
        x = BETA * (sc - sr)  # β·Δ
        q, q_bar = sig(x), sig(-x)
        out.append(
            {
                "sigmoid": softplus(-x),
                "cdpo": (1 - EPS) * softplus(-x) + EPS * softplus(x),
                "robust": ((1 - EPS) * softplus(-x) - EPS * softplus(x)) / (1 - 2 * EPS),
                "hinge": max(0.0, 1 - x),
                "ipo": (sc / lc - sr / lr - 1 / (2 * BETA)) ** 2,
                "exo_pair": q * (math.log(q) - math.log(1 - EPS)) + q_bar * (math.log(q_bar) - math.log(EPS)),
                "discopop": (1 - sig(x / TAU)) * softplus(-x) + sig(x / TAU) * math.exp(-x),
                "sigmoid_norm": softplus(-BETA * (sc / lc - sr / lr)),
                "sft": -sum(PI_C) / sum(LEN_C),
            }[loss_type]
        )
    return out


F_DIVERGENCE_LOSSES = ["sigmoid", "cdpo", "robust", "hinge", "ipo", "exo_pair", "discopop", "sigmoid_norm", "sft"]


def test_f_scores_are_f_prime_of_the_ratio_constants_included():
    for divergence in DIVERGENCES:
        u = [1.0, -2.0, 0.0, 3.5]
        assert close(f_scores(mx.array(u), divergence, 0.5), [f_prime(divergence, x) for x in u])
    assert close(
        f_scores(mx.array([1.0, -2.0]), "alpha_divergence", 0.3),
        [f_prime("alpha_divergence", x, 0.3) for x in (1.0, -2.0)],
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("loss_type", F_DIVERGENCE_LOSSES)
def test_every_loss_an_f_divergence_applies_to_is_trls_formula_on_its_scores(loss_type, divergence):
    # ipo and sigmoid_norm divide each score by its own length, so the constants of f' matter there (once, ipo
    # with forward_kl gave 1138.04 against TRL's 1137.32: the constants were dropped).
    options = {"label_smoothing": EPS} if loss_type in ("cdpo", "robust", "exo_pair") else {}
    out = loss(loss_type, f_divergence_type=divergence, discopop_tau=TAU, **options, **lengths())
    assert close(out, formula(loss_type, divergence))


@pytest.mark.parametrize("divergence", DIVERGENCES[1:])
@pytest.mark.parametrize("loss_type", [t for t in LOSS_TYPES if t not in F_DIVERGENCE_LOSSES])
def test_an_f_divergence_is_refused_where_trl_refuses_it(loss_type, divergence):
    # nca_pair, bco_pair and sppo_hard read each score on its own (an offset TRL does not want); aot, aot_unpaired,
    # apo_zero and apo_down use the raw log-ratios; simpo, orpo and kto have no reference ratio to transform.
    with pytest.raises(ValueError, match=rf"f_divergence_type applies only to .* not {loss_type}, as in TRL"):
        TrainingArgs(loss_type=loss_type, f_divergence_type=divergence)
    if loss_type != "kto":
        with pytest.raises(ValueError, match="f_divergence_type applies only to"):
            loss(loss_type, f_divergence_type=divergence, **lengths())


def test_alpha_divergence_at_alpha_one_is_reverse_kl():
    assert close(
        loss("sigmoid", f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0),
        [softplus(-0.3), softplus(0.3)],
    )


def test_wpo_weights_are_the_mean_per_token_log_ratio_to_sum_p_squared_of_both_answers_multiplied():
    # Rows: chosen of pair 0, rejected of pair 0 (0 at padding). Chosen: ((−1+3) + (−2+3))/2 = 1.5; rejected:
    # (−0.5+1)/1 = 0.5; the pair's weight is e^1.5 · e^0.5 = e².
    tokens = mx.array([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    log_sum_sq = mx.array([[-3.0, -3.0, 0.0], [-1.0, 0.0, 0.0]])
    assert close(wpo_weights(tokens, log_sum_sq, mx.array([2.0, 1.0])), [math.exp(2.0)])


def test_combined_losses_are_the_weighted_sum_of_their_parts():
    arrays = [mx.array(v) for v in (PI_C, PI_R, REF_C, REF_R)]
    options = dict(beta=BETA, **lengths())
    parts = {t: preference_loss(*arrays, loss_type=t, **options).tolist() for t in ("sigmoid", "sft", "ipo")}
    out = combined_loss(*arrays, loss_types=("sigmoid", "sft", "ipo"), loss_weights=(1.0, 0.5, 0.25), **options)
    assert close(out, [parts["sigmoid"][i] + 0.5 * parts["sft"][i] + 0.25 * parts["ipo"][i] for i in range(2)])
    unweighted = combined_loss(*arrays, loss_types=("sigmoid", "sft"), **options)
    assert close(unweighted, [parts["sigmoid"][i] + parts["sft"][i] for i in range(2)])


def test_kto_scores_each_answer_against_the_kl_reference_point():
    # u = π − ref = [1, −2]; answer 0 desirable, answer 1 undesirable; z = 0.5
    pi, ref, z = mx.array(PI_C), mx.array(REF_C), mx.array(0.5)
    out = kto_loss(pi, ref, mx.array([1.0, 0.0]), z, beta=BETA)
    assert close(out, [1 - sig(0.1 * (1 - 0.5)), 1 - sig(0.1 * (0.5 + 2))])
    out = kto_loss(pi, ref, mx.array([0.0, 1.0]), z, beta=BETA, desirable_weight=2.0, undesirable_weight=0.5)
    assert close(out, [0.5 * (1 - sig(0.1 * (0.5 - 1))), 2.0 * (1 - sig(0.1 * (-2 - 0.5)))])


def test_kto_reference_point_is_the_clamped_mean_mismatched_log_ratio():
    assert kto_reference_point(mx.array([-3.0, -5.0]), mx.array([-4.0, -5.0])).item() == pytest.approx(0.5)
    assert kto_reference_point(mx.array([-6.0, -5.0]), mx.array([-4.0, -5.0])).item() == 0.0


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


# apo_down means to lower the chosen answer too; aot and aot_unpaired re-pair the batch by sorting; sft is
# one batch-level value.
@pytest.mark.parametrize("loss_type", [t for t in PAIR_LOSSES if t not in ("apo_down", "aot", "aot_unpaired", "sft")])
def test_a_pair_where_the_policy_favours_chosen_more_has_lower_loss(loss_type):
    # Same rejected side; the policy gives the chosen answer 2 nats more in the first pair than in the second.
    out = loss(
        loss_type,
        pi_c=[-8.0, -10.0],
        pi_r=[-12.0, -12.0],
        ref_c=[-10.0, -10.0],
        ref_r=[-12.0, -12.0],
        chosen_lengths=mx.array([4, 4]),
        rejected_lengths=mx.array([4, 4]),
        label_smoothing=1e-3 if loss_type == "exo_pair" else 0.0,
    )
    first, second = out.tolist()
    assert first < second


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "ipo", "simpo"])
def test_gradient_pushes_chosen_logps_up(loss_type):
    # Descending the loss must raise the chosen log-prob: d(mean loss)/d(π_c) < 0.
    def mean_loss(pi_c):
        return preference_loss(
            pi_c, mx.array(PI_R), mx.array(REF_C), mx.array(REF_R), loss_type=loss_type, beta=BETA, **lengths()
        ).mean()

    grad = mx.grad(mean_loss)(mx.array(PI_C))
    assert all(g < 0 for g in grad.tolist())


def test_sigmoid_gradient_matches_hand_derivative():
    # d/dπ_c of mean softplus(−βΔ) = −β·σ(−βΔ)/B
    grad = mx.grad(lambda pi_c: loss("sigmoid", pi_c=pi_c).mean())(mx.array(PI_C))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert close(grad, [-0.1 * sig(-0.3) / 2, -0.1 * sig(0.3) / 2])


@pytest.mark.parametrize(
    "loss_type, label_smoothing",
    [(t, 1e-3 if t == "exo_pair" else 0.0) for t in PAIR_LOSSES] + [("cdpo", 0.2), ("robust", 0.2), ("aot", 0.2)],
)
def test_huge_margins_stay_finite(loss_type, label_smoothing):
    def mean_loss(pi_c):
        return preference_loss(
            pi_c,
            mx.zeros(2),
            mx.zeros(2),
            mx.zeros(2),
            loss_type=loss_type,
            beta=1.0,
            label_smoothing=label_smoothing,
            chosen_lengths=mx.ones(2),
            rejected_lengths=mx.ones(2),
        ).mean()

    pi_c = mx.array([1000.0, -1000.0])  # Δ = ±1000
    value, grad = mx.value_and_grad(mean_loss)(pi_c)
    assert math.isfinite(value.item())
    assert all(math.isfinite(g) for g in grad.tolist())


def test_sigmoid_at_huge_margins_is_zero_and_linear():
    out = loss("sigmoid", pi_c=[1000.0, -1000.0], pi_r=[0.0, 0.0], ref_c=[0.0, 0.0], ref_r=[0.0, 0.0], beta=1.0)
    assert close(out, [0.0, 1000.0])


# --- argument errors --------------------------------------------------------------------------------------


def test_unknown_loss_type_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss_type 'dpo'.*sigmoid, hinge, ipo, exo_pair"):
        loss("dpo")


@pytest.mark.parametrize("loss_type", ["ipo", "simpo", "sigmoid_norm", "sft", "orpo"])
def test_length_normalised_losses_need_lengths(loss_type):
    with pytest.raises(ValueError, match="needs chosen_lengths and rejected_lengths"):
        loss(loss_type, chosen_lengths=mx.array(LEN_C))


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "hinge", "ipo"])
def test_reference_losses_need_reference_logps(loss_type):
    with pytest.raises(ValueError, match="needs reference log-probs"):
        loss(loss_type, ref_r=None, **lengths())


@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7])
@pytest.mark.parametrize("loss_type", ["cdpo", "robust", "aot"])
def test_label_smoothing_must_be_below_one_half(loss_type, eps):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        loss(loss_type, label_smoothing=eps)


@pytest.mark.parametrize("loss_type", ["hinge", "ipo", "simpo", "orpo"])
def test_label_smoothing_is_refused_where_it_would_be_ignored(loss_type):
    with pytest.raises(ValueError, match="label_smoothing applies only to"):
        loss(loss_type, label_smoothing=0.1, **lengths())


def test_sigmoid_with_label_smoothing_points_to_cdpo():
    # TRL 1.16's sigmoid ignores label_smoothing; here it is refused with the name that has it.
    with pytest.raises(ValueError, match="use --loss cdpo"):
        loss("sigmoid", label_smoothing=0.1)


def test_exo_pair_needs_label_smoothing():
    with pytest.raises(ValueError, match=r"must be in \(0, 1\) for exo_pair"):
        loss("exo_pair")


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(loss_type="sigmoid,sft", loss_weights=[1.0]), "needs one weight per loss"),
        (dict(loss_type="sigmoid,orpo"), "they each train alone"),
        (dict(loss_type="kto,sigmoid"), "they each train alone"),
        (dict(loss_type="sigmoid,dpo"), "unknown loss_type 'dpo'"),
        (dict(loss_type="aot", use_weighting=True), "does not apply to --loss aot"),
        (dict(ld_alpha=1.5), r"must be in \[0, 1\]"),
        (dict(loss_type="kto", ld_alpha=0.5), "does not apply to kto"),
        (dict(f_divergence_type="kl"), "unknown f_divergence_type 'kl'"),
    ],
)
def test_combination_rules_are_settings_checks(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainingArgs(**settings)


def test_loss_lists_have_one_spelling():
    assert TrainingArgs(loss_type=["sigmoid", "sft"], loss_weights=["1", "0.5"]).loss_type == "sigmoid,sft"
    args = TrainingArgs(loss_type="sigmoid, sft", loss_weights=["1", "0.5"])
    assert (args.losses, args.loss_weights) == (("sigmoid", "sft"), [1.0, 0.5])


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_beta_must_be_positive(beta):
    with pytest.raises(ValueError, match="beta must be > 0"):
        loss("sigmoid", beta=beta)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"ref_rejected_logps has shape \(3,\)"):
        loss("sigmoid", ref_r=[0.0, 0.0, 0.0])
