"""A run killed in the middle of a report window and resumed reports what the uninterrupted run reports.

The report at step 3 averages steps 1-3. The run is killed after step 2, just after its checkpoint there,
in the middle of that window. The checkpoint keeps the window's running sums, so the resumed run's step-3
report covers steps 1, 2 and 3, not only the step after the restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, read_metrics, without_timing, write_demo_pairs
from mlx_dpo.training import checkpoint

TINY_SEED = 21  # this module's own weights (conftest.py)


def _train_args(tiny: Path, data: Path, out: Path) -> list[str]:
    return ["train", "--model", str(tiny), "--data", str(data), "--adapter-path", str(out),
            "--iters", "3", "--batch-size", "2", "--learning-rate", "1e-3", "--lora-dropout", "0.1",
            "--steps-per-report", "3", "--save-every", "2", "--seed", "4", "--no-compile"]


def _kill_after_step(args: list[str], step: int, release: Path) -> None:
    """Run `mlx-dpo ARGS` in a child, hold it after `step` (training/pause.py) and SIGKILL it there."""
    env = {**os.environ, "MLX_DPO_PAUSE_AT_STEP": str(step), "MLX_DPO_PAUSE_FILE": str(release)}
    proc = subprocess.Popen([sys.executable, "-m", "mlx_dpo.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # only a hung child takes this long; nothing here is timed
        while not Path(f"{release}.reached").is_file():
            assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"the run did not reach step {step}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_a_run_killed_mid_window_reports_the_same_metrics_after_resume(tmp_path, tiny, capsys):
    from mlx_dpo.cli import main

    data = write_demo_pairs(tmp_path / "pairs.jsonl", 8)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(_train_args(tiny, data, whole)) == 0, capsys.readouterr().err

    _kill_after_step(_train_args(tiny, data, killed), 2, tmp_path / "release")
    last = checkpoint.latest(killed)
    assert last == killed / "checkpoints" / "step-000002"
    assert not (killed / "metrics.jsonl").exists() or read_metrics(killed / "metrics.jsonl") == []  # none yet
    # The checkpoint holds the open window: steps 1 and 2, a batch of two pairs each.
    window = json.loads((last / checkpoint.STATE_FILE).read_text())["report_window"]
    assert window["pairs"] == 4 and "loss" in window["sums"]

    assert main([*_train_args(tiny, data, killed), "--resume"]) == 0, capsys.readouterr().err

    whole_lines, resumed_lines = read_metrics(whole / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [line["step"] for line in whole_lines] == [line["step"] for line in resumed_lines] == [3]
    for expected, got in zip(whole_lines, resumed_lines):
        expected, got = without_timing(expected), without_timing(got)
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-6, rel=0), key
