"""Every training option through the real loop (`mlx_dpo.api.train`), each checked by what it must change.

A check here fails if its option were ignored: the update is computed by hand from the step's gradients
(AdamW, clipping, weight decay), the learning rates from the schedule's formula, the losses from the
per-pair log-probs `eval --per-example` reports. Runs are 1-5 steps on this module's tiny llama, uncompiled;
each run gets a fresh copy of one loaded model (a run puts its adapter on the model it is given).

How a test sees a step's gradients: `trainer._micro_batches` returns one optimizer step's averaged,
unclipped gradients; a spy records them with the adapter weights the step starts from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest
from helpers import make_adapter, read_metrics
from mlx.utils import tree_flatten

from mlx_dpo.api import evaluate, train
from mlx_dpo.cli import main
from mlx_dpo.events import StepMetrics
from mlx_dpo.models.load import load_model
from mlx_dpo.models.session import ModelSession
from mlx_dpo.options import SettingError
from mlx_dpo.settings import LOSS_TYPES, TrainingArgs
from mlx_dpo.training import checkpoint, trainer
from mlx_dpo.training.losses import preference_loss

TINY_SEED = 17  # this module's tiny model (conftest.py): a reference cache of its own
# What every run here shares: one report per step, no compile (no test here is about compile).
QUICK = dict(steps_per_report=1, compile=False, seed=0)
BETA = 0.1


# Short answers: the vocabulary projection of each answer token is most of a tiny model's step.
PAIRS = [
    ("What is the capital of France?", "Paris.", "Well, it could be many cities."),
    ("Name a prime number.", "Seven.", "Nine, I think."),
    ("Say hello in Spanish.", "Hola.", "Bonjour, my friend!"),
    ("What is two plus two?", "Four.", "Twenty-two, of course."),
    ("What colour is the sky?", "Blue, on a clear day.", "Green."),
    ("Spell cat backwards.", "tac", "It is cat."),
    ("What is ice made of?", "Frozen water.", "Glass, mostly."),
    ("How many legs has a spider?", "Eight.", "Six or so."),
]


def write_pairs(path: Path, rows) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": p, "chosen": c, "rejected": r}) + "\n" for i, (p, c, r) in rows)
    )
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("pairs")
    rows = list(enumerate(PAIRS))
    return SimpleNamespace(
        four=write_pairs(root / "four.jsonl", rows[:4]),
        six=write_pairs(root / "six.jsonl", rows[:6]),
        valid=write_pairs(root / "valid.jsonl", rows[6:]),
    )


@pytest.fixture(scope="module")
def fresh(tiny):
    """`fresh()`: the tiny model as load_model gives it, newly built (the tokenizer, slow to load, is shared)."""
    from mlx_lm.utils import load_model as mlx_load_model

    base = load_model(str(tiny))

    def make():
        model, _ = mlx_load_model(base.path)
        model.set_dtype(mx.float32)
        mx.eval(model.parameters())
        return ModelSession(
            model, base.tokenizer, path=base.path, config=base.config, name=base.name, quantized=base.quantized
        )

    return make


def arrays(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.float64) for k, v in tree_flatten(tree)}


@pytest.fixture
def step_spy(monkeypatch):
    """`spy(model)` -> a list that gets, per optimizer step, (adapter weights before it, its unclipped gradients)."""

    def spy(model):
        records = []
        real = trainer._micro_batches

        def recording(*args, **kwargs):
            before = arrays(model.trainable_parameters())
            result = real(*args, **kwargs)
            records.append((before, arrays(result[0])))
            return result

        monkeypatch.setattr(trainer, "_micro_batches", recording)
        return records

    return spy


def saved_adapter(folder: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.float64) for k, v in mx.load(str(folder / "adapters.safetensors")).items()}


def assert_trees_close(actual: dict, expected: dict, rtol: float = 1e-4) -> None:
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        scale = max(float(np.abs(want).max()), 1e-12)
        np.testing.assert_allclose(actual[name], want, rtol=rtol, atol=rtol * scale, err_msg=name)


# --- the optimizer step ------------------------------------------------------------------------------------


def test_weight_decay_and_clipping_change_the_update_exactly_as_adamw_and_clipping_define(
    tmp_path, data, fresh, step_spy
):
    lr, decay, max_norm = 1e-2, 0.5, 1e-3
    loaded = fresh()
    steps = step_spy(loaded.model)
    out = tmp_path / "adapter"
    train(
        data.four,
        loaded=loaded,
        adapter_path=out,
        iters=2,
        batch_size=4,
        learning_rate=lr,
        lr_schedule="constant",
        weight_decay=decay,
        max_grad_norm=max_norm,
        **QUICK,
    )
    assert len(steps) == 2

    # MLX's AdamW by hand: betas (0.9, 0.999), eps 1e-8, no bias correction, decay applied to the weight first.
    weights = dict(steps[0][0])
    m = {k: np.zeros_like(w) for k, w in weights.items()}
    v = {k: np.zeros_like(w) for k, w in weights.items()}
    for i, (before, grads) in enumerate(steps):
        if i:
            assert_trees_close(before, weights)  # the previous step by hand gives the weights this one starts from
        norm = math.sqrt(sum(float((g**2).sum()) for g in grads.values()))
        assert norm > max_norm  # so the clipping below is not vacuous
        for k, g in grads.items():
            g = g * max_norm / (norm + 1e-6)
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g**2
            weights[k] = weights[k] * (1 - lr * decay) - lr * m[k] / (np.sqrt(v[k]) + 1e-8)
    assert_trees_close(saved_adapter(out), weights)
    # The optimizer's moments hold the clipped gradients (Adam's update alone hardly shows a uniform rescale).
    state = {
        k: np.array(a, dtype=np.float64)
        for k, a in mx.load(str(checkpoint.latest(out) / checkpoint.OPTIMIZER_FILE)).items()
    }
    assert_trees_close({k: state[f"{k}.m"] for k in m}, m)
    assert_trees_close({k: state[f"{k}.v"] for k in v}, v, rtol=1e-3)
    # Decay alone moves the A matrices in step 1 (their gradient is zero while B is zero): visible, not noise.
    a_name = next(k for k in steps[0][0] if k.endswith("lora_a"))
    assert not np.any(steps[0][1][a_name])
    np.testing.assert_allclose(steps[1][0][a_name], steps[0][0][a_name] * (1 - lr * decay), rtol=1e-6)


def test_four_pairs_in_one_batch_and_two_accumulated_batches_of_two_make_the_same_update(
    tmp_path, data, fresh, step_spy
):
    runs = {}
    for batch_size, accum in [(4, 1), (2, 2)]:
        loaded = fresh()
        steps = step_spy(loaded.model)
        out = tmp_path / f"b{batch_size}x{accum}"
        result = train(
            data.four,
            loaded=loaded,
            adapter_path=out,
            iters=1,
            batch_size=batch_size,
            grad_accum=accum,
            learning_rate=1e-2,
            max_grad_norm=0,
            **QUICK,
        )
        runs[accum] = SimpleNamespace(grads=steps[0][1], adapter=saved_adapter(out), metrics=result.metrics)
    # The mean over four pairs: summed over two micro-batches and divided by two, not one batch alone, not the sum.
    assert_trees_close(runs[2].grads, runs[1].grads)
    # Adam's first step is about lr x sign(g): where g is near zero, rounding flips it, so 1% of the step size.
    assert_trees_close(runs[2].adapter, runs[1].adapter, rtol=1e-2)
    assert runs[2].metrics["loss"] == pytest.approx(runs[1].metrics["loss"], rel=1e-5)
    assert runs[2].metrics["epoch"] == runs[1].metrics["epoch"] == 1.0


@pytest.mark.parametrize("shared_prompt", [False, True], ids=["sequences", "shared-prompt"])
def test_gradient_checkpointing_gives_the_same_gradients_as_none(
    tmp_path, data, fresh, step_spy, monkeypatch, shared_prompt
):
    from mlx_lm.models.llama import TransformerBlock

    # mlx-lm's grad_checkpoint replaces the block class's __call__ for every model in the process: put it back after.
    monkeypatch.setattr(TransformerBlock, "__call__", TransformerBlock.__call__)
    checkpoints = []
    real_checkpoint = mx.checkpoint
    monkeypatch.setattr(mx, "checkpoint", lambda fn: checkpoints.append(fn) or real_checkpoint(fn))
    grads, lines = {}, []
    for on in (False, True):
        loaded = fresh()
        steps = step_spy(loaded.model)
        # Checkpointed blocks cannot carry the shared prompt's gradients, so that run takes two full sequences
        # and says so: its gradients are compared with the uncheckpointed run of that layout.
        train(
            data.four,
            loaded=loaded,
            adapter_path=tmp_path / str(on),
            iters=2,
            batch_size=4,
            learning_rate=1e-2,
            grad_checkpoint=on,
            shared_prompt=shared_prompt and on,
            on_event=lines.append,
            **QUICK,
        )
        grads[on] = [g for _, g in steps]
        assert bool(checkpoints) is on  # each block's forward ran under mx.checkpoint only when asked for
    said = any(
        getattr(e, "message", "").startswith("log-probs: prompt not shared, as --grad-checkpoint needs") for e in lines
    )
    assert said is shared_prompt
    for plain, recomputed in zip(grads[False], grads[True]):
        assert_trees_close(recomputed, plain)
    assert any(np.any(g) for k, g in grads[False][1].items() if k.endswith("lora_a"))  # step 2 reaches every weight


# --- the schedule and the run's length ---------------------------------------------------------------------


def expected_learning_rate(step: int, *, peak: float, steps: int, warmup: int, schedule: str) -> float:
    """Step `step` (1-based) runs at: 0 -> peak linearly over `warmup` steps, then constant, or a cosine from
    peak down to a tenth of it over the remaining steps."""
    t = step - 1  # the optimizer's step counter when this step's update is made
    if t < warmup:
        return peak * t / warmup
    if schedule == "constant":
        return peak
    low, span = peak / 10, max(1, steps - warmup)
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * min(t - warmup, span) / span))


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_the_learning_rate_of_each_step_is_the_warmup_then_the_schedule(tmp_path, data, fresh, schedule):
    peak, steps, warmup = 1e-3, 6, 2
    out = tmp_path / "adapter"
    train(
        data.four,
        loaded=fresh(),
        adapter_path=out,
        iters=steps,
        batch_size=2,
        learning_rate=peak,
        warmup_steps=warmup,
        lr_schedule=schedule,
        **QUICK,
    )
    rates = [line["learning_rate"] for line in read_metrics(out / "metrics.jsonl")]
    expected = [
        expected_learning_rate(s, peak=peak, steps=steps, warmup=warmup, schedule=schedule) for s in range(1, steps + 1)
    ]
    np.testing.assert_allclose(rates, expected, rtol=1e-5, atol=1e-12)
    assert len(set(np.round(rates, 12))) == (steps if schedule == "cosine" else warmup + 1)


@pytest.mark.parametrize("epochs, accum, steps", [(1.5, 1, 5), (2, 2, 3)])
def test_epochs_set_the_number_of_steps(tmp_path, data, fresh, epochs, accum, steps):
    # Six pairs in batches of two: three micro-batches per epoch; a step takes `accum` of them.
    events = []
    train(
        data.six,
        loaded=fresh(),
        adapter_path=tmp_path / "adapter",
        epochs=epochs,
        batch_size=2,
        grad_accum=accum,
        on_event=events.append,
        **QUICK,
    )
    reports = [e for e in events if isinstance(e, StepMetrics)]
    assert [e.step for e in reports] == list(range(1, steps + 1))
    assert {e.total_steps for e in reports} == {steps}
    assert reports[-1].metrics["epoch"] == pytest.approx(steps * accum / 3, abs=1e-3)


# --- the adapter's shape and scale, and where metrics go (as flags of `mlx-dpo train`) -----------------------


def test_lora_keys_alpha_and_layers_give_the_adapters_shapes_and_scale_and_metrics_go_where_asked(
    tmp_path, tiny, data, capsys
):
    import mlx_lm
    from mlx_lm.tuner.lora import LoRALinear

    # `mlx-dpo train` in this process (a child would spend most of its time importing): the same parser and call.
    out, metrics = tmp_path / "adapter", tmp_path / "elsewhere" / "run.jsonl"
    code = main(
        [
            "train",
            "--model",
            str(tiny),
            "--data",
            str(data.four),
            "--adapter-path",
            str(out),
            "--iters",
            "1",
            "--batch-size",
            "4",
            "--no-compile",
            "--learning-rate",
            "1e-2",
            "--lora-keys",
            "self_attn.q_proj,self_attn.v_proj",
            "--lora-rank",
            "2",
            "--lora-alpha",
            "6",
            "--lora-layers",
            "1",
            "--metrics-file",
            str(metrics),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["adapter_path"] == str(out)

    # Only the last of the two blocks, only q and v; A is (in, rank), B is (rank, out). The tiny llama has
    # 4 heads and 2 key-value heads of 16: q maps 64 -> 64, v maps 64 -> 32.
    shapes = {k: v.shape for k, v in mx.load(str(out / "adapters.safetensors")).items()}
    assert shapes == {
        "model.layers.1.self_attn.q_proj.lora_a": (64, 2),
        "model.layers.1.self_attn.q_proj.lora_b": (2, 64),
        "model.layers.1.self_attn.v_proj.lora_a": (64, 2),
        "model.layers.1.self_attn.v_proj.lora_b": (2, 32),
    }
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["num_layers"] == 1 and config["lora_parameters"]["scale"] == 3.0  # alpha / rank
    # The scale is what the loaded layer multiplies by: y = W x + scale * (x A) B.
    model, _ = mlx_lm.load(str(tiny), adapter_path=str(out))
    layer = model.model.layers[1].self_attn.q_proj
    assert isinstance(layer, LoRALinear) and layer.scale == 3.0
    assert not isinstance(model.model.layers[0].self_attn.q_proj, LoRALinear)
    assert not isinstance(model.model.layers[1].self_attn.k_proj, LoRALinear)
    x = mx.random.normal((3, 64))
    np.testing.assert_allclose(
        np.array(layer(x)), np.array(layer.linear(x) + 3.0 * ((x @ layer.lora_a) @ layer.lora_b)), rtol=1e-5, atol=1e-6
    )

    assert [line["step"] for line in read_metrics(metrics)] == [1]
    assert not (out / "metrics.jsonl").exists()


# --- every loss, in a training step and in evaluation ------------------------------------------------------


def per_pair_rows(path: Path) -> dict[str, mx.array]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    column = lambda name: mx.array([float(r[name]) for r in rows])  # noqa: E731
    return {
        "policy_chosen_logps": column("policy_chosen_logp"),
        "policy_rejected_logps": column("policy_rejected_logp"),
        "ref_chosen_logps": column("ref_chosen_logp"),
        "ref_rejected_logps": column("ref_rejected_logp"),
        "chosen_lengths": column("chosen_tokens"),
        "rejected_lengths": column("rejected_tokens"),
    }


def expected_loss(
    rows: dict[str, mx.array], loss_type: str, label_smoothing: float = 0.0, rpo_alpha: float = 0.0
) -> float:
    """The mean loss over the pairs from their log-probs: the loss function (checked against hand-worked
    numbers in test_losses.py) plus RPO's term, written out here: alpha x the chosen answer's NLL per token.
    """
    losses = preference_loss(**rows, loss_type=loss_type, beta=BETA, label_smoothing=label_smoothing)
    losses = losses + rpo_alpha * (-rows["policy_chosen_logps"] / rows["chosen_lengths"])
    return float(losses.mean().item())


@pytest.fixture(scope="module")
def base_rows(tmp_path_factory, data, fresh) -> dict[str, mx.array]:
    """The four training pairs scored by the base model, which is also the reference and the policy at step 1."""
    path = tmp_path_factory.mktemp("base") / "rows.jsonl"
    evaluate(data.four, loaded=fresh(), per_example=path)
    return per_pair_rows(path)


def _smallest_smoothing(loss_type: str) -> float:
    """0, or the smallest label smoothing the loss accepts (exo_pair needs some)."""
    try:
        TrainingArgs(loss_type=loss_type)
        return 0.0
    except SettingError:
        return 1e-3


# Every loss as settings.py lists it when the tests run, each smoothed one with smoothing, and RPO.
LOSS_CASES = (
    [pytest.param(loss, _smallest_smoothing(loss), 0.0, id=loss) for loss in LOSS_TYPES]
    + [pytest.param(loss, 0.2, 0.0, id=f"{loss}-smoothing") for loss in ("cdpo", "robust")]
    + [pytest.param("sigmoid", 0.0, 0.5, id="rpo")]
)
# Losses that are DPO's sigmoid itself without smoothing, so a test cannot tell them from it (aot/aot_unpaired
# sort within the batch: on pairs already in order they are sigmoid too).
SIGMOID_WITHOUT_SMOOTHING = {"sigmoid", "cdpo", "robust", "aot", "aot_unpaired"}


@pytest.mark.parametrize("loss_type, label_smoothing, rpo_alpha", LOSS_CASES)
def test_every_loss_runs_in_a_training_step_and_in_evaluation(
    tmp_path, data, fresh, base_rows, loss_type, label_smoothing, rpo_alpha
):
    out = tmp_path / "adapter"
    result = train(
        data.four,
        valid_data=data.valid,
        loaded=fresh(),
        adapter_path=out,
        iters=1,
        batch_size=4,
        learning_rate=5e-2,
        beta=BETA,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        rpo_alpha=rpo_alpha,
        **QUICK,
    )
    options = dict(loss_type=loss_type, label_smoothing=label_smoothing, rpo_alpha=rpo_alpha)
    assert math.isfinite(result.metrics["loss"]) and math.isfinite(result.eval_metrics["eval_loss"])
    if loss_type == "kto":  # single answers: `eval` scores each against its label and KTO's KL point (kto_scores.py)
        summary = evaluate(data.valid, loaded=fresh(), adapter_path=out, beta=BETA, loss_type=loss_type)
        assert math.isfinite(summary["loss"]) and math.isfinite(summary["kl"]), summary
        return
    rows_path = tmp_path / "valid_rows.jsonl"
    summary = evaluate(data.valid, loaded=fresh(), adapter_path=out, beta=BETA, per_example=rows_path, **options)
    rows = per_pair_rows(rows_path)
    want = expected_loss(rows, **options)
    # The training step: its loss over the four pairs, from the starting policy (the base: B is zero).
    assert result.metrics["loss"] == pytest.approx(expected_loss(base_rows, **options), rel=1e-4, abs=1e-6)
    # The run's evaluation after the step, from the trained adapter's per-pair log-probs ...
    assert result.eval_metrics["eval_loss"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    # ... where the options change the number (so the two checks above would catch an option left out) ...
    if label_smoothing or rpo_alpha or loss_type not in SIGMOID_WITHOUT_SMOOTHING:
        assert abs(want - expected_loss(rows, "sigmoid")) > 1e-4
    # ... and `eval` with the same loss settings scores the same.
    assert summary["loss"] == pytest.approx(want, rel=1e-4, abs=1e-6)


# --- a starting adapter -------------------------------------------------------------------------------------


def test_a_starting_adapter_is_the_reference_unless_the_base_is_asked_for(tmp_path, tiny, data, fresh):
    start = make_adapter(str(tiny), tmp_path / "init", rank=4, seed=1, base_model=str(tiny))
    first = {}
    for reference in ("start", "base"):
        events = []
        train(
            data.four,
            loaded=fresh(),
            init_adapter=start,
            reference=reference,
            adapter_path=tmp_path / reference,
            iters=1,
            batch_size=4,
            beta=BETA,
            on_event=events.append,
            **QUICK,
        )
        first[reference] = next(e for e in events if isinstance(e, StepMetrics)).metrics
    # Step 1's policy is the starting adapter. Its reference is that adapter too: zero rewards, loss log 2 ...
    assert first["start"]["rewards/chosen"] == pytest.approx(0, abs=1e-6)
    assert first["start"]["rewards/rejected"] == pytest.approx(0, abs=1e-6)
    assert first["start"]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    # ... and with reference="base" the rewards are beta x (adapter's log-probs - base's), as eval reports them.
    rows_path = tmp_path / "rows.jsonl"
    evaluate(data.four, loaded=fresh(), adapter_path=start, per_example=rows_path)
    rows = per_pair_rows(rows_path)
    reward = BETA * (rows["policy_chosen_logps"] - rows["ref_chosen_logps"]).mean().item()
    assert abs(reward) > 1e-3
    assert first["base"]["rewards/chosen"] == pytest.approx(reward, rel=1e-4)
