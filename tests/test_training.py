"""Training through the Python API (`mlx_dpo.train`): reference cache, saved adapter, events, metrics.

Every run here is short and uses a small random llama with the default model's tokenizer, except
the one marked slow, which trains the real default model on the shipped demo pairs.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import pytest
from helpers import TRL_STEP_FIELDS, read_metrics, without_timing, write_demo_pairs

from mlx_dpo.api import train
from mlx_dpo.data.pairs import DEMO_PAIRS_PATH, load_pairs, write_pairs
from mlx_dpo.events import Cancelled, CheckpointSaved, EvalMetrics, Finished, Status, StepMetrics
from mlx_dpo.models.load import load_model
from mlx_dpo.training import checkpoint
from mlx_dpo.training.batching import make_batch
from mlx_dpo.training.logprobs import sequence_logps
from mlx_dpo.training.tokens import Encoder

RUN_FIELDS = {"tokens_per_second", "peak_memory_gb", "ref_cache/hits", "ref_cache/misses"}

# A short run: 8 pairs in batches of 2, one report per step, LoRA dropout on so the RNG matters.
SHORT_RUN = dict(iters=4, batch_size=2, steps_per_report=1, save_every=2, seed=3, lora_dropout=0.1)
# This module's `tiny` model (conftest.py), a seed of its own: no other module's tiny model shares its reference cache.
TINY_SEED = 11


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    """One finished run with validation pairs, its events, and the model it trained (still in memory)."""
    root = tmp_path_factory.mktemp("trained")
    data = write_demo_pairs(root / "train.jsonl", 8)
    valid = write_demo_pairs(root / "valid.jsonl", 2, start=30)
    loaded = load_model(str(tiny))
    events: list = []
    result = train(
        data,
        valid_data=valid,
        loaded=loaded,
        adapter_path=root / "adapter",
        iters=4,
        batch_size=2,
        learning_rate=5e-4,
        steps_per_report=1,
        steps_per_eval=2,
        save_every=2,
        seed=1,
        on_event=events.append,
    )
    return SimpleNamespace(
        result=result, events=events, loaded=loaded, data=data, valid=valid, adapter=root / "adapter"
    )


# --- 1. the reference cache ---------------------------------------------------------------------------------


def test_a_warm_reference_cache_skips_the_reference_pass_and_changes_no_metric(tmp_path, tiny, fresh_cache):
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 8)
    cold_events, warm_events = [], []
    cold = train(data, model=str(tiny), adapter_path=tmp_path / "cold", on_event=cold_events.append, **SHORT_RUN)
    warm = train(data, model=str(tiny), adapter_path=tmp_path / "warm", on_event=warm_events.append, **SHORT_RUN)

    # Cold: every completion (chosen and rejected of 8 pairs) ran through the reference.
    assert (cold.reference.hits, cold.reference.misses) == (0, 16)
    assert cold.reference.seconds > 0
    assert any(isinstance(e, Status) and e.message == "reference pass" and e.done > 0 for e in cold_events)
    # Warm: all 16 from the cache, and no reference forward pass at all.
    assert (warm.reference.hits, warm.reference.misses) == (16, 0)
    assert warm.reference.seconds == 0
    assert not any(isinstance(e, Status) and e.message == "reference pass" and e.done > 0 for e in warm_events)

    cold_lines, warm_lines = (
        read_metrics(tmp_path / "cold" / "metrics.jsonl"),
        read_metrics(tmp_path / "warm" / "metrics.jsonl"),
    )
    assert [line["step"] for line in cold_lines] == [1, 2, 3, 4]
    assert all(line["ref_cache/misses"] == 16 and line["ref_cache/hits"] == 0 for line in cold_lines)
    assert all(line["ref_cache/misses"] == 0 and line["ref_cache/hits"] == 16 for line in warm_lines)
    # Same seed, same data: every training number is identical, bit for bit.
    assert [without_timing(line) for line in warm_lines] == [without_timing(line) for line in cold_lines]
    cold_weights = mx.load(str(tmp_path / "cold" / "adapters.safetensors"))
    warm_weights = mx.load(str(tmp_path / "warm" / "adapters.safetensors"))
    assert cold_weights.keys() == warm_weights.keys()
    assert all(mx.array_equal(cold_weights[k], warm_weights[k]).item() for k in cold_weights)


def test_adding_pairs_computes_reference_logprobs_only_for_the_new_ones(tmp_path, tiny, fresh_cache):
    old = write_demo_pairs(tmp_path / "old.jsonl", 8)
    first = train(old, model=str(tiny), adapter_path=tmp_path / "first", iters=1, batch_size=2)
    assert (first.reference.hits, first.reference.misses) == (0, 16)

    old_and_new = tmp_path / "old_and_new.jsonl"
    old_and_new.write_text(old.read_text() + write_demo_pairs(tmp_path / "new.jsonl", 3, start=20).read_text())
    second = train(old_and_new, model=str(tiny), adapter_path=tmp_path / "second", iters=1, batch_size=2)
    assert second.reference.misses == 2 * 3  # chosen and rejected of each new pair
    assert second.reference.hits == 2 * 8
    assert read_metrics(tmp_path / "second" / "metrics.jsonl")[-1]["ref_cache/misses"] == 6


# --- 3. the saved adapter -----------------------------------------------------------------------------------


def _logps(model, encoded) -> list[float]:
    model.eval()
    batch = make_batch([(p.prompt, p.chosen) for p in encoded] + [(p.prompt, p.rejected) for p in encoded])
    values = sequence_logps(model, batch)
    mx.eval(values)
    return values.tolist()


def test_the_saved_adapter_loads_in_mlx_lm_and_gives_the_trained_models_logprobs(trained, tiny):
    import mlx_lm
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model as mlx_lm_load_model

    adapter = trained.adapter
    assert (adapter / "adapters.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["num_layers"] == 2

    pairs = load_pairs(trained.data).pairs[:2] + load_pairs(trained.valid).pairs  # seen in training, and not
    encoded, _ = Encoder(trained.loaded.tokenizer).encode_all(pairs)
    in_memory = _logps(trained.loaded.model, encoded)

    via_load, _ = mlx_lm.load(str(tiny), adapter_path=str(adapter))
    assert _logps(via_load, encoded) == in_memory

    base, _ = mlx_lm_load_model(tiny)
    base_logps = _logps(base, encoded)
    assert base_logps != in_memory  # training moved the policy: the comparison above is not vacuous
    assert _logps(load_adapters(base, str(adapter)), encoded) == in_memory


# --- 7. events and cancelling -------------------------------------------------------------------------------


def test_a_run_reports_status_then_steps_and_checkpoints_then_finished(trained):
    events = trained.events
    kinds = [type(e) for e in events]
    first_step = kinds.index(StepMetrics)
    assert first_step > 0 and set(kinds[:first_step]) == {Status}
    phases = [e.message for e in events[:first_step]]
    assert phases.index("tokenizing") < phases.index("reference pass")  # (no "loading model": it came loaded)
    assert Status not in kinds[first_step:]
    assert kinds[-1] is Finished and kinds.count(Finished) == 1

    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert [e.step for e in steps] == [1, 2, 3, 4] and {e.total_steps for e in steps} == {4}
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [e.step for e in saved] == [2, 4]
    for ckpt in saved:  # a checkpoint comes after its step's report
        report = next(i for i, e in enumerate(events) if isinstance(e, StepMetrics) and e.step == ckpt.step)
        assert events.index(ckpt) > report
        assert Path(ckpt.path) == trained.adapter / "checkpoints" / f"step-{ckpt.step:06d}"
    assert [e.step for e in events if isinstance(e, EvalMetrics)] == [2, 4]

    finished = events[-1]
    assert Path(finished.adapter_path) == trained.adapter == trained.result.adapter_path
    assert finished.metrics == steps[-1].metrics == trained.result.metrics
    assert trained.result.cancelled is False


def test_cancelling_from_the_event_callback_stops_within_one_step_and_keeps_the_checkpoint(tmp_path, tiny):
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 8)
    cancel = threading.Event()
    events: list = []

    def on_event(event):
        events.append(event)
        if isinstance(event, StepMetrics):
            cancel.set()

    out = tmp_path / "adapter"
    result = train(
        data,
        model=str(tiny),
        adapter_path=out,
        iters=3,
        batch_size=2,
        steps_per_report=1,
        save_every=1,
        seed=3,
        on_event=on_event,
        cancel=cancel,
    )

    assert result.cancelled is True
    assert [e.step for e in events if isinstance(e, StepMetrics)] == [1]
    assert isinstance(events[-1], Cancelled) and events[-1].step == 1
    assert Path(events[-1].adapter_path) == out
    assert not any(isinstance(e, Finished) for e in events)
    # The checkpoint of the last finished step stays, and the adapter beside it is usable.
    assert checkpoint.latest(out) == out / "checkpoints" / "step-000001"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]
    assert (out / "adapter_config.json").is_file() and (out / "adapters.safetensors").is_file()
    assert [line["step"] for line in read_metrics(out / "metrics.jsonl")] == [1]

    # ... and the run carries on from there.
    resumed: list = []
    finished = train(
        data,
        model=str(tiny),
        adapter_path=out,
        resume=True,
        iters=3,
        batch_size=2,
        steps_per_report=1,
        save_every=1,
        seed=3,
        on_event=resumed.append,
    )
    assert not finished.cancelled
    assert [e.step for e in resumed if isinstance(e, StepMetrics)] == [2, 3]
    assert [line["step"] for line in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


# --- 8. metric names ----------------------------------------------------------------------------------------


def test_metrics_lines_use_trl_names_and_eval_lines_the_eval_prefix(trained):
    lines = read_metrics(trained.adapter / "metrics.jsonl")
    step_lines = [line for line in lines if not any(k.startswith("eval_") for k in line)]
    eval_lines = [line for line in lines if any(k.startswith("eval_") for k in line)]

    assert [line["step"] for line in step_lines] == [1, 2, 3, 4]
    for line in step_lines:
        assert TRL_STEP_FIELDS | RUN_FIELDS <= set(line), sorted(TRL_STEP_FIELDS | RUN_FIELDS - set(line))
        assert line["rewards/margins"] == pytest.approx(line["rewards/chosen"] - line["rewards/rejected"], abs=1e-5)
        assert 0.0 <= line["rewards/accuracies"] <= 1.0
        assert line["logps/chosen"] < 0 and line["logps/rejected"] < 0
        assert line["learning_rate"] > 0 and line["tokens_per_second"] > 0 and line["peak_memory_gb"] > 0
        assert (line["ref_cache/hits"] + line["ref_cache/misses"]) == 2 * (8 + 2)  # train and valid pairs

    assert [line["step"] for line in eval_lines] == [2, 4]
    eval_names = {f"eval_{name}" for name in TRL_STEP_FIELDS - {"step", "learning_rate"}}
    for line in eval_lines:
        assert eval_names <= set(line)
        assert {k for k in line if k != "step"} == {k for k in line if k.startswith("eval_")}
    assert trained.result.eval_metrics == eval_lines[-1]


# --- 4. the real default model ------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_learns_the_demo_preferences_in_a_few_steps(tmp_path):
    # The real thing, in the default suite: one epoch over the 8 shortest demo pairs (a ~8 s reference pass
    # on an idle 2-core CPU, then ~3 s per step). Skip with `pytest -m "not slow"`.
    demo = load_pairs(DEMO_PAIRS_PATH).pairs
    assert len(demo) == 41
    shortest = sorted(demo, key=lambda p: len(json.dumps(p.prompt)) + len(p.chosen) + len(p.rejected))[:8]
    write_pairs(tmp_path / "pairs.jsonl", shortest)

    result = train(
        tmp_path / "pairs.jsonl",
        model=None,
        adapter_path=tmp_path / "adapter",
        lora_num_layers=4,
        batch_size=2,
        iters=4,
        learning_rate=3e-4,
        steps_per_report=2,
        seed=0,
    )

    reports = [line for line in read_metrics(tmp_path / "adapter" / "metrics.jsonl") if "loss" in line]
    assert [line["step"] for line in reports] == [2, 4]
    margins = [line["rewards/margins"] for line in reports]
    assert all(later > earlier for earlier, later in zip(margins, margins[1:])), margins
    assert max(line["rewards/accuracies"] for line in reports) >= 0.9
    assert result.metrics["rewards/accuracies"] >= 0.9
    assert result.metrics["loss"] < math.log(2)


def test_continuing_from_an_adapter_carries_its_optimizer_moments_but_not_its_step(tmp_path):
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    from mlx_dpo.models.adapter import save_arrays

    params = {"w": mx.ones((3,))}
    first = optim.AdamW(learning_rate=0.1)
    first.update(params, {"w": mx.array([0.5, -1.0, 2.0])})
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_arrays(folder / checkpoint.OPTIMIZER_FILE, dict(tree_flatten(first.state)))

    second = optim.AdamW(learning_rate=0.1)
    checkpoint.restore_moments(folder, second)
    second.init(params)
    assert second.state["step"].item() == 0
    assert mx.array_equal(second.state["w"]["m"], first.state["w"]["m"])
    assert mx.array_equal(second.state["w"]["v"], first.state["w"]["v"])
