"""The method family in training: every loss trains a compiled step, ORPO runs without a reference, KTO from
single answers marked good or bad, LD-DPO's weighting, and the metrics each method logs under TRL's names.

One tiny model is shared by the step tests (each takes one step); the run tests use `train()` end to end.
"""

import math

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import pytest
from helpers import write_jsonl

from mlx_dpo.data.feedback import Feedback, feedback_from_pairs, kto_pairs, load_feedback
from mlx_dpo.data.pairs import PreferencePair, load_pairs
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.paths import home
from mlx_dpo.settings import LOSS_TYPES, LoraSettings, TrainingArgs
from mlx_dpo.training.logprobs import PairLogps
from mlx_dpo.training.methods import ld_weighted
from mlx_dpo.training.run import train

TINY_SEED = 14
DEMO = "mlx_dpo/data/datasets/demo_pairs.jsonl"


@pytest.fixture(scope="module")
def step_setup(tiny):
    """The tiny model with an adapter, and four encoded demo pairs with made-up reference log-probs."""
    from mlx_dpo.models.load import load_model
    from mlx_dpo.training.reference import RefLogps
    from mlx_dpo.training.tokens import Encoder

    loaded = load_model(str(tiny))
    loaded.train_adapter(None, LoraSettings(rank=4))
    pairs = load_pairs(DEMO).pairs[:2]
    encoded, _ = Encoder(loaded.tokenizer).encode_all(pairs)
    import dataclasses

    encoded = [dataclasses.replace(p, desirable=i % 2 == 0) for i, p in enumerate(encoded)]
    ref = RefLogps({p: (-150.0 - i, -300.0 + i) for i, p in enumerate(encoded)})
    loaded.model.train()
    return loaded.model, encoded, ref, loaded.checks  # the session's record: one self-check for every step below


# Every pair loss in one combined step (one compilation covers every formula), then the settings that change the
# graph around the losses, and the methods with their own metrics.
ALL_PAIR_LOSSES = ",".join(t for t in LOSS_TYPES if t not in ("orpo", "kto"))
STEP_CASES = [
    dict(loss_type=ALL_PAIR_LOSSES, label_smoothing=1e-3, rpo_alpha=0.5),
    dict(loss_type="ipo,sigmoid_norm", f_divergence_type="js_divergence", ld_alpha=0.5),
    dict(loss_type="orpo"),
    dict(loss_type="kto"),
]


@pytest.mark.parametrize("settings", STEP_CASES, ids=["all-pair-losses", "f-divergence-ld", "orpo", "kto"])
def test_every_loss_trains_a_compiled_step_with_the_uncompiled_value(step_setup, settings):
    # Once, simpo crashed inside mx.compile's gradient ("_Map_base::at"): an output of the compiled step that is
    # also a node of the loss graph. Compiled and plain steps must agree, with a gradient that is not zero.
    from mlx_dpo.training.trainer import make_step

    model, encoded, ref, checks = step_setup
    results = []
    for compiled in (True, False):
        step = make_step(model, TrainingArgs(compile=compiled, **settings), checks=checks)
        (loss, metrics), grads = step(step.batch(encoded, ref))
        mx.eval(loss, metrics, grads)
        results.append((loss.item(), metrics, grads))
    (loss, metrics, grads), (plain, plain_metrics, _) = results
    assert math.isfinite(loss) and loss == pytest.approx(plain, rel=1e-3, abs=1e-4)
    assert metrics.keys() == plain_metrics.keys()
    assert all(v.shape == (len(encoded),) for v in metrics.values())
    from mlx.utils import tree_flatten

    assert any(mx.abs(g).max().item() > 0 for _, g in tree_flatten(grads))


def test_each_method_logs_trls_metric_names(step_setup):
    from mlx_dpo.training.trainer import make_step

    model, encoded, ref, checks = step_setup
    dpo = {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "loss",
    }
    expected = {
        "sigmoid": dpo,
        "orpo": dpo | {"nll_loss", "log_odds_ratio", "log_odds_chosen"},
        "kto": {
            "kl",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "logps/chosen",
            "logps/rejected",
            "loss",
        },
    }
    for loss_type, names in expected.items():
        step = make_step(model, TrainingArgs(loss_type=loss_type, compile=False), checks=checks)
        (_, metrics), _ = step(step.batch(encoded, ref))
        assert set(metrics) == names, loss_type


def test_kto_rewards_are_the_means_over_the_desirable_and_the_undesirable_answers(step_setup):
    from mlx_dpo.training.trainer import make_step

    model, encoded, ref, checks = step_setup  # answer 0 desirable, answer 1 not
    step = make_step(model, TrainingArgs(loss_type="kto", compile=False), checks=checks)
    (_, metrics), _ = step(step.batch(encoded, ref))
    from mlx_dpo.training.trainer import pair_logps

    logps = pair_logps(model, step.batch(encoded, ref).tokens).chosen.tolist()
    rewards = [0.1 * (lp - ref.values[p][0]) for lp, p in zip(logps, encoded)]
    assert metrics["rewards/chosen"].mean().item() == pytest.approx(rewards[0], rel=1e-4)
    assert metrics["rewards/rejected"].mean().item() == pytest.approx(rewards[1], rel=1e-4)


def test_ld_alpha_weights_the_tokens_past_the_shorter_answer():
    # Chosen has 2 tokens, rejected 3: the shared length is 2, so only the rejected answer's third token is scaled.
    tokens = mx.array([[-1.0, -2.0, 0.0], [-3.0, -4.0, -5.0]])
    logps = PairLogps(mx.array([-3.0]), mx.array([-12.0]), mx.array([2.0]), mx.array([3.0]), tokens)
    for alpha in (0.0, 0.5, 1.0):
        out = ld_weighted(logps, alpha)
        assert (out.chosen.item(), out.rejected.item()) == pytest.approx((-3.0, -7.0 - 5.0 * alpha))


# --- runs ---------------------------------------------------------------------------------------------------


def test_orpo_runs_without_a_reference_pass_or_cache(tmp_path, tiny, fresh_cache):
    result = train(
        DEMO, model=str(tiny), adapter_path=tmp_path / "orpo", loss_type="orpo", iters=1, batch_size=2, compile=False
    )
    assert (result.reference.hits, result.reference.misses, result.reference.seconds) == (0, 0, 0.0)
    assert (result.metrics["ref_cache/hits"], result.metrics["ref_cache/misses"]) == (0, 0)
    assert not list(home().rglob("*.sqlite"))  # no cache file was created
    assert {"nll_loss", "log_odds_ratio", "log_odds_chosen"} <= result.metrics.keys()


def test_kto_trains_from_answers_marked_good_or_bad_with_cached_reference(tmp_path, tiny, fresh_cache):
    pairs = load_pairs(DEMO).pairs[:3]
    rows = [{"prompt": p.prompt, "completion": p.chosen, "label": True} for p in pairs] + [
        {"prompt": p.prompt[-1]["content"], "completion": p.rejected, "label": False} for p in pairs
    ]
    data = write_jsonl(tmp_path / "feedback.jsonl", *rows)
    first = train(
        data,
        model=str(tiny),
        adapter_path=tmp_path / "a",
        loss_type="kto",
        iters=1,
        batch_size=3,
        compile=False,
        desirable_weight=1.5,
    )
    assert first.reference.misses == 12 and first.reference.hits == 0  # own and mismatched answer per example
    assert "kl" in first.metrics and first.metrics["kl"] >= 0
    again = train(
        data,
        model=str(tiny),
        adapter_path=tmp_path / "b",
        loss_type="kto",
        iters=1,
        batch_size=3,
        compile=False,
        desirable_weight=1.5,
    )
    assert (again.reference.hits, again.reference.misses) == (12, 0)
    assert again.metrics["loss"] == pytest.approx(first.metrics["loss"], rel=1e-5)


def test_feedback_rows_are_checked_line_by_line(tmp_path):
    path = write_jsonl(
        tmp_path / "fb.jsonl",
        {"prompt": "Hi", "completion": "Hello", "label": True},
        {"prompt": "Hi", "completion": "", "label": False},
        {"prompt": "Hi", "completion": "Yo", "label": "yes"},
        "{not json",
    )
    with pytest.raises(MlxDpoError) as e:
        load_feedback(path)
    text = str(e.value)
    assert f"{path}: 3 invalid rows" in text
    assert f"{path}:2: field 'completion': is empty" in text
    assert f"{path}:3: field 'label': must be true or false, got \"yes\"" in text
    assert f"{path}:4: not valid JSON" in text
    examples, skipped = load_feedback(path, skip_invalid=True)
    assert skipped == 3 and [(f.completion, f.desirable) for f in examples] == [("Hello", True)]


def test_pairs_feed_kto_as_one_good_and_one_bad_answer_each(tmp_path):
    user = [{"role": "user", "content": "Q"}]
    pairs = [PreferencePair("a", user, "good a", "bad a"), PreferencePair("b", user, "good b", "bad b")]
    examples = feedback_from_pairs(pairs)
    assert [(f.completion, f.desirable) for f in examples] == [
        ("good a", True),
        ("good b", True),
        ("bad a", False),
        ("bad b", False),
    ]
    path = write_jsonl(
        tmp_path / "pairs.jsonl", *({"prompt": "Q", "chosen": p.chosen, "rejected": p.rejected} for p in pairs)
    )
    assert [(f.completion, f.desirable) for f in load_feedback(path)[0]] == [
        (f.completion, f.desirable) for f in examples
    ]


def test_kto_mismatched_answers_rotate_within_each_batch_sized_chunk():
    user = [{"role": "user", "content": "Q"}]
    examples = [Feedback(str(i), user, f"answer {i}", i % 2 == 0) for i in range(5)]
    laid_out, labels = kto_pairs(examples, batch_size=2)
    assert [(p.chosen, p.rejected) for p in laid_out] == [
        ("answer 0", "answer 1"),
        ("answer 1", "answer 0"),
        ("answer 2", "answer 3"),
        ("answer 3", "answer 2"),
        ("answer 4", "answer 4"),
    ]
    assert labels == {"0": True, "1": False, "2": True, "3": False, "4": True}


def test_kto_needs_a_batch_of_two(tmp_path, tiny):
    with pytest.raises(MlxDpoError, match="--loss kto needs --batch-size of at least 2"):
        train(DEMO, model=str(tiny), adapter_path=tmp_path / "x", loss_type="kto", batch_size=1, iters=1)


def test_the_store_keeps_answers_marked_good_or_bad_until_a_finished_round_trains_them(workspace):
    from mlx_dpo.data.store import PreferenceStore

    user = [{"role": "user", "content": "Q"}]
    with PreferenceStore(workspace) as store:
        bad = store.add_feedback(user, "a poor answer", False, sampler="tiny@0.7")
        good = store.add_feedback("Q", "a fine answer", True)
        assert [(f.completion, f.desirable) for f in store.list_feedback()] == [
            ("a poor answer", False),
            ("a fine answer", True),
        ]
        assert good.prompt == user and bad.to_feedback().desirable is False
        with pytest.raises(MlxDpoError, match="answer is empty"):
            store.add_feedback(user, "  ", True)
        with pytest.raises(MlxDpoError, match="must be good or bad"):
            store.add_feedback(user, "x", 1)
        store.record_round(1, "adapters/v1", {}, {}, "cancelled", [])
        store.record_round_feedback(1, [bad.id])
        assert [f.id for f in store.untrained_feedback()] == [bad.id, good.id]  # a cancelled round trains nothing
        store.record_round(2, "adapters/v2", {}, {}, "finished", [])
        store.record_round_feedback(2, [bad.id])
        assert [f.id for f in store.untrained_feedback()] == [good.id]
