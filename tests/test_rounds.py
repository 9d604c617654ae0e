"""Incremental training rounds (`mlx_dpo.training.rounds`) and `mlx-dpo train --workspace DIR --incremental`,
on a tiny model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import mlx.core as mx
import pytest
from helpers import run_cli

from mlx_dpo.cli import main
from mlx_dpo.data.pairs import DEMO_PAIRS_PATH, load_pairs
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.events import StepMetrics
from mlx_dpo.models.adapter import adapter_weights
from mlx_dpo.models.load import load_model
from mlx_dpo.settings import RoundSettings, TrainingArgs
from mlx_dpo.training import checkpoint, rounds, run

SETTINGS = dict(iters=2, batch_size=2, lora_rank=4, replay=0.5, seed=1)
TINY_SEED = 23  # this module's `tiny` model (conftest.py): the cache-miss counts below are its own


def add_demo_pairs(workspace: Path, count: int, start: int) -> list[int]:
    pairs = load_pairs(DEMO_PAIRS_PATH).pairs[start : start + count]
    with PreferenceStore(workspace) as store:
        return [store.add_pair(p.prompt, p.chosen, p.rejected, origin="sampled").id for p in pairs]


def test_two_rounds_reference_only_for_new_pairs(tmp_path, tiny, fresh_cache, monkeypatch):
    ws = tmp_path / "ws"
    first = add_demo_pairs(ws, 4, 0)
    r1 = rounds.run_round(ws, model=str(tiny), settings=SETTINGS)
    assert r1.status == "finished" and r1.version == 1 and r1.init_adapter is None
    assert r1.adapter_path == ws / "adapters" / "v1" and (r1.adapter_path / "adapters.safetensors").is_file()
    assert r1.metrics["ref_cache/misses"] == 2 * 4 and r1.metrics["ref_cache/hits"] == 0

    second = add_demo_pairs(ws, 2, 10)
    with PreferenceStore(ws) as store:
        assert [p.id for p in store.untrained_pairs()] == second
    v1 = dict(mx.load(str(r1.adapter_path / "adapters.safetensors")))
    started_with = {}
    real_loop = run.train_loop

    def spy(model, *args, **kwargs):  # the adapter the round starts from, as the loop receives it
        started_with.update({k: mx.array(v) for k, v in adapter_weights(model).items()})
        started_with["optimizer_from"] = kwargs.get("optimizer_from")
        return real_loop(model, *args, **kwargs)

    monkeypatch.setattr(run, "train_loop", spy)
    events = []
    r2 = rounds.run_round(ws, model=str(tiny), settings=SETTINGS, on_event=events.append)
    assert r2.status == "finished" and r2.version == 2 and r2.init_adapter == str(ws / "adapters" / "v1")
    assert r2.new_pair_ids == second and len(r2.replay_pair_ids) == 1 and set(r2.replay_pair_ids) <= set(first)
    assert r2.metrics["ref_cache/misses"] == 2 * len(second)  # only the new pairs need a reference pass
    assert r2.metrics["ref_cache/hits"] == 2 * len(r2.replay_pair_ids)
    # ... and its optimizer moments come from v1's last checkpoint
    assert started_with.pop("optimizer_from") == checkpoint.latest(r1.adapter_path)
    assert set(started_with) == set(v1)
    for k in v1:
        assert mx.array_equal(started_with[k], v1[k]), k
    assert [e.step for e in events if isinstance(e, StepMetrics)] == [1, 2]

    with PreferenceStore(ws) as store:
        recorded = store.list_rounds()
        assert not store.untrained_pairs()
    assert [(r.version, r.status) for r in recorded] == [(1, "finished"), (2, "finished")]
    assert recorded[0].pair_ids == first
    assert recorded[1].pair_ids == sorted(second + r2.replay_pair_ids)
    assert recorded[1].metrics["ref_cache/misses"] == 4
    assert recorded[1].settings["init_adapter"] == str(ws / "adapters" / "v1")


def test_no_new_pairs_is_a_clear_error(tmp_path, tiny):
    ws = tmp_path / "ws"
    PreferenceStore(ws).close()
    with pytest.raises(Exception, match="no new pairs"):
        rounds.run_round(ws, model=str(tiny), settings=SETTINGS)


def test_cancelled_round_keeps_checkpoint_and_next_round_starts_from_finished(tmp_path, tiny, fresh_cache):
    ws = tmp_path / "ws"
    add_demo_pairs(ws, 4, 0)
    rounds.run_round(ws, model=str(tiny), settings=SETTINGS)
    new = add_demo_pairs(ws, 2, 10)
    cancel = threading.Event()

    def stop_after_first_step(event):
        if isinstance(event, StepMetrics) and event.step == 1:
            cancel.set()

    r2 = rounds.run_round(
        ws, model=str(tiny), settings={**SETTINGS, "iters": 4}, on_event=stop_after_first_step, cancel=cancel
    )
    assert r2.status == "cancelled" and r2.version == 2
    # The last checkpoint (step 1) stays on disk, and the top-level adapter is that checkpoint's.
    ckpts = sorted(p.name for p in (r2.adapter_path / "checkpoints").iterdir())
    assert ckpts == ["step-000001"]
    top = dict(mx.load(str(r2.adapter_path / "adapters.safetensors")))
    step1 = dict(mx.load(str(r2.adapter_path / "checkpoints" / "step-000001" / "adapters.safetensors")))
    assert all(mx.array_equal(top[k], step1[k]) for k in top)
    with PreferenceStore(ws) as store:
        assert [p.id for p in store.untrained_pairs()] == new  # a cancelled round trains nothing for good
        assert [r.status for r in store.list_rounds()] == ["finished", "cancelled"]

    r3 = rounds.run_round(ws, model=str(tiny), settings=SETTINGS)
    assert r3.status == "finished" and r3.version == 3
    assert r3.init_adapter == str(ws / "adapters" / "v1")  # the latest FINISHED version
    assert r3.new_pair_ids == new
    assert r3.metrics["ref_cache/misses"] == 0  # the cancelled round already cached the new pairs


def test_cli_incremental_end_to_end(tmp_path, tiny):
    ws = tmp_path / "ws"
    add_demo_pairs(ws, 4, 0)
    args = [
        "train",
        "--workspace",
        str(ws),
        "--incremental",
        "--model",
        str(tiny),
        "--iters",
        "2",
        "--batch-size",
        "2",
        "--lora-rank",
        "4",
        "--beta",
        "0.2",
        "--learning-rate",
        "1e-4",
        "--replay",
        "1",
    ]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["version"] == 1 and out["status"] == "finished" and out["ref_cache/misses"] == 8
    add_demo_pairs(ws, 2, 10)
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["version"] == 2 and out["new_pairs"] == 2 and out["replayed_pairs"] == 2
    assert out["ref_cache/misses"] == 4 and out["ref_cache/hits"] == 4
    with PreferenceStore(ws) as store:
        recorded = store.list_rounds()
    assert recorded[1].settings["beta"] == 0.2 and recorded[1].settings["learning_rate"] == 1e-4
    assert recorded[1].settings["replay"] == 1.0
    # No new pairs: a one-line error, not a traceback.
    result = run_cli(*args)
    assert result.returncode != 0 and "no new pairs" in result.stderr and "Traceback" not in result.stderr


def test_a_round_lasts_passes_over_its_pairs_kept_between_min_and_max_steps():
    args = TrainingArgs(batch_size=4)
    steps = lambda pairs, **kw: rounds.round_steps(RoundSettings(**kw), args, pairs)  # noqa: E731
    assert steps(1, passes=2, min_steps=1) == 2  # one pair, one batch a pass: seen twice, not twenty times
    assert steps(10, passes=2, min_steps=1) == 6  # ceil(10 / 4) = 3 batches a pass
    assert steps(1, passes=2, min_steps=3) == 3 and steps(100, passes=2, max_steps=40) == 40
    assert rounds.round_steps(RoundSettings(passes=1, min_steps=1), TrainingArgs(batch_size=2, grad_accum=2), 8) == 2
    with pytest.raises(Exception, match=r"max_steps must be at least --min-steps \(5\)"):
        RoundSettings(min_steps=5, max_steps=4)
    with pytest.raises(Exception, match="a round's length is set by passes"):
        rounds.round_options({"epochs": 2})
    options, record = rounds.round_options({"passes": 3, "reference": "previous"})
    assert "passes" not in options and "reference" not in options  # round settings do not reach run.train
    assert (record["passes"], record["reference"], record["min_steps"]) == (3, "previous", RoundSettings().min_steps)


def test_reference_previous_caches_under_the_previous_version_and_a_rerun_reuses_it(tmp_path, tiny, fresh_cache):
    ws = tmp_path / "ws"
    add_demo_pairs(ws, 2, 0)
    settings = {**SETTINGS, "iters": 1, "reference": "previous", "replay": 1, "compile": False}
    loaded = load_model(str(tiny))
    r1 = rounds.run_round(ws, settings=settings, loaded=loaded)  # no previous version: the base
    assert r1.metrics["ref_cache/misses"] == 4
    base_files = {p.name for p in (fresh_cache / "ref-cache").glob("*.sqlite")}
    add_demo_pairs(ws, 2, 10)
    cancel = threading.Event()
    cancel.set()  # cancelled before its first step, after its reference pass
    r2 = rounds.run_round(ws, settings=settings, cancel=cancel, loaded=loaded)
    assert r2.status == "cancelled" and loaded.adapter_path == r1.adapter_path  # back on the version it started from
    # Every pair (new and replayed) missed: its reference is v1 now, cached in a file of its own.
    assert r2.metrics["ref_cache/misses"] == 2 * (2 + 2) and r2.metrics["ref_cache/hits"] == 0
    files = {p.name for p in (fresh_cache / "ref-cache").glob("*.sqlite")}
    r3 = rounds.run_round(ws, settings=settings, loaded=loaded)  # the same round again, from v1
    assert r3.status == "finished" and r3.init_adapter == str(r1.adapter_path)
    assert loaded.adapter_path == r3.adapter_path  # the loaded model is left on the new version
    assert r3.metrics["ref_cache/misses"] == 0 and r3.metrics["ref_cache/hits"] == 2 * (2 + 2)
    v1_config = json.loads((r1.adapter_path / "adapter_config.json").read_text())["mlx_dpo"]
    v3_config = json.loads((r3.adapter_path / "adapter_config.json").read_text())["mlx_dpo"]
    assert v3_config["reference"] == "start" and v3_config["init_adapter"] == str(r1.adapter_path)
    assert v3_config["reference_fingerprint"] != v1_config["reference_fingerprint"]  # the adapter's digest is in it
    assert files - base_files == {f"{v3_config['reference_fingerprint']}.sqlite"}


def test_a_round_setting_on_a_plain_train_run_is_refused_not_ignored(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "never-read.jsonl"), "--passes", "3"]) == 2
    assert (
        capsys.readouterr().err == "mlx-dpo: error: --passes applies to a round: add --incremental (and --workspace)\n"
    )
