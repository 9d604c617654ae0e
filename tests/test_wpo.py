"""WPO (`use_weighting`): each pair's loss times w(chosen)·w(rejected), w(y) = exp(mean_t(log p_t − log Σ_v p_v²)),
the policy's own per-token probabilities measured against its confidence there, with no gradient through w.

The expected numbers are computed here from one unbatched forward per completion and the full-vocabulary
log-softmax (numpy, float64), and every path of the step (shared prompt or not, completion-only head or full
logits, compiled or not) must give them.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.models.adapter import LoraSettings
from mlx_dpo.models.load import load_model
from mlx_dpo.settings import TrainingArgs
from mlx_dpo.training import fast_path, logprobs
from mlx_dpo.training.reference import RefLogps
from mlx_dpo.training.tokens import Encoder
from mlx_dpo.training.trainer import make_step

TINY_SEED = 29
BETA = 0.1
REF = (-30.0, -40.0)  # every pair's reference log-probs (chosen, rejected)
PATHS = [(True, False), (True, True), (False, False), (False, True)]  # (shared_prompt, full_logits)


@pytest.fixture(scope="module")
def loaded(tiny):
    """The module's tiny model with a LoRA adapter whose B is non-zero (so the adapter changes the policy)."""
    loaded = load_model(str(tiny))
    mx.random.seed(3)
    loaded.train_adapter(None, LoraSettings(rank=4))
    for _, m in loaded.model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = 0.05 * mx.random.normal(m.lora_b.shape)
    mx.eval(loaded.model.parameters())
    return loaded


@pytest.fixture(scope="module")
def pairs(loaded):
    raw = [
        PreferencePair("a", [{"role": "user", "content": "Hi"}], "Hello there, friend.", "Go away."),
        PreferencePair(
            "b",
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
            "4.",
            "Well, that is a great question! It depends.",
        ),
        PreferencePair(
            "c",
            [{"role": "user", "content": "Name a prime between ten and twenty."}],
            "13.",
            "Twelve, I think, or maybe fifteen.",
        ),
    ]
    return Encoder(loaded.tokenizer).encode_all(raw)[0]


def full_vocabulary(model, prompt, completion) -> tuple[np.ndarray, np.ndarray]:
    """(log p_t, log Σ_v p_v²) at each completion token, from one unbatched forward and its full log-softmax."""
    sequence = list(prompt) + list(completion)
    logits = np.array(model(mx.array([sequence[:-1]]))[0].astype(mx.float32), dtype=np.float64)
    log_softmax = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    rows = log_softmax[len(prompt) - 1 : len(prompt) - 1 + len(completion)]
    return rows[np.arange(len(completion)), completion], np.log(np.exp(2 * rows).sum(-1))


def expected(model, pairs) -> tuple[float, list[float]]:
    """The batch's WPO-weighted DPO loss and each pair's weight, by the formula, from `full_vocabulary`."""
    losses, weights = [], []
    for p in pairs:
        lp_c, sq_c = full_vocabulary(model, p.prompt, p.chosen)
        lp_r, sq_r = full_vocabulary(model, p.prompt, p.rejected)
        weight = math.exp((lp_c - sq_c).mean()) * math.exp((lp_r - sq_r).mean())
        delta = (lp_c.sum() - REF[0]) - (lp_r.sum() - REF[1])
        losses.append(weight * math.log1p(math.exp(-BETA * delta)))  # −log σ(βΔ)·w
        weights.append(weight)
    return sum(losses) / len(losses), weights


def step_loss(loaded, pairs, **settings) -> tuple[float, dict]:
    args = TrainingArgs(beta=BETA, **settings)
    step = make_step(loaded.model, args, checks=loaded.checks)
    (loss, metrics), grads = step(step.batch(pairs, RefLogps({p: REF for p in pairs})))
    mx.eval(loss, grads)
    return loss.item(), {k: np.array(v) for k, v in tree_flatten(grads)}


@pytest.mark.parametrize(
    "shared_prompt, full_logits", PATHS, ids=["shared+head", "shared+full", "sequences+head", "plain"]
)
def test_the_weighted_loss_is_the_hand_computed_value_on_every_path(loaded, pairs, shared_prompt, full_logits):
    want, weights = expected(loaded.model, pairs)
    # The weights are far from 1 and differ between pairs, so an unweighted or evenly weighted loss would fail.
    assert all(0 < w < 0.5 for w in weights) and max(weights) / min(weights) > 1.2
    got, _ = step_loss(
        loaded, pairs, use_weighting=True, shared_prompt=shared_prompt, full_logits=full_logits, compile=not full_logits
    )
    assert got == pytest.approx(want, rel=1e-4)


def test_no_gradient_flows_through_the_weights(loaded, pairs):
    # One pair: the weighted loss is w·loss with w a constant, so its gradient is exactly w times the unweighted one.
    (weight,) = expected(loaded.model, pairs[:1])[1]
    _, weighted = step_loss(loaded, pairs[:1], use_weighting=True, compile=False)
    _, plain = step_loss(loaded, pairs[:1], compile=False)
    for name, g in plain.items():
        np.testing.assert_allclose(weighted[name], weight * g, rtol=0, atol=1e-4 * np.abs(g).max(), err_msg=name)


def test_the_self_check_guards_the_weights_of_the_completion_only_head(tiny, monkeypatch):
    # A completion-only head whose log Σ p² were wrong (its log-probs right) must be switched off, as a wrong
    # log-prob would be: the probe compares both against the model's own forward.
    real = logprobs.chunked_stats

    def off_by_half(head, states, targets):
        logps, log_sq = real(head, states, targets)
        return logps, log_sq + 0.5

    monkeypatch.setattr(logprobs, "chunked_stats", off_by_half)
    model = load_model(str(tiny)).model  # a model the probe has not met
    line, (shared, full) = fast_path.describe(model)
    assert full and not shared, line
    assert "completion-only head differs from the model's own forward by 0.5" in line


def test_wpo_still_refuses_the_losses_it_cannot_weigh():
    for loss in ("aot", "aot_unpaired", "orpo", "kto"):
        with pytest.raises(ValueError, match="does not apply to --loss aot"):
            TrainingArgs(loss_type=loss, use_weighting=True)
    assert TrainingArgs(loss_type="sigmoid,sft", loss_weights=[1, 0.5], use_weighting=True).use_weighting
