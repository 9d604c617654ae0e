"""`--report-to trackio`: a run's metrics in trackio's local store under TRL's names, read back through trackio's
own API (trackio.Api, trackio.SQLiteStorage), with the network closed (conftest.py points TRACKIO_DIR at the test
home and unsets any Space or server).

The project is the workspace and each round a run named by its version, with its held-out numbers and its held-out
answers as a `completions` table (TRL's LogCompletionsCallback columns); a plain run is a run named by its folder.
"""

from __future__ import annotations

import socket
import uuid

import pytest
from helpers import read_metrics, user, write_demo_pairs

from mlx_dpo import tracking
from mlx_dpo.tracking import trl_names

TINY_SEED = 8


@pytest.fixture
def no_network(monkeypatch):
    """Any connection to another machine fails the test (trackio may only write its local store)."""
    real = socket.socket.connect

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network use: {address}")
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def trackio_logs(project: str, run: str) -> list[dict]:
    import trackio

    return trackio.SQLiteStorage.get_logs(project, run)


def test_metrics_get_trls_names():
    assert trl_names({"step": 3, "loss": 0.5, "rewards/margins": 1.0, "eval_loss": 0.4, "note": "x"}) == (
        3,
        {"train/loss": 0.5, "train/rewards/margins": 1.0, "eval/loss": 0.4, "train/global_step": 3},
    )


def test_a_train_run_logs_every_metrics_line_to_trackio_under_trls_names(tiny, tmp_path, no_network, capsys):
    import trackio

    from mlx_dpo.cli import main

    data, valid = write_demo_pairs(tmp_path / "t.jsonl", 4), write_demo_pairs(tmp_path / "v.jsonl", 2, start=20)
    adapter, project = tmp_path / "run-a", f"plain-{uuid.uuid4().hex[:8]}"  # a store that outlives a test run
    assert (
        main(
            [
                "train",
                "--model",
                str(tiny),
                "--data",
                str(data),
                "--valid-data",
                str(valid),
                "--adapter-path",
                str(adapter),
                "--iters",
                "2",
                "--batch-size",
                "2",
                "--steps-per-report",
                "1",
                "--steps-per-eval",
                "2",
                "--no-compile",
                "--report-to",
                "trackio",
                "--project",
                project,
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out.startswith("{") and len(out.splitlines()) == 1  # stdout stays the command's JSON
    assert f"trackio: project '{project}', run 'run-a'" in err

    [run] = trackio.Api().runs(project)
    assert (run.name, run.config["loss_type"], run.config["beta"]) == ("run-a", "sigmoid", 0.1)
    logged = trackio_logs(project, "run-a")
    lines = read_metrics(adapter / "metrics.jsonl")
    assert len(logged) == len(lines) == 3  # two step reports, one evaluation
    for row, line in zip(logged, lines):
        step, named = trl_names(line)
        assert row["step"] == step and {k: row[k] for k in named} == pytest.approx(named)
    assert logged[0]["train/loss"] == pytest.approx(lines[0]["loss"])
    assert logged[2]["eval/rewards/accuracies"] == pytest.approx(lines[2]["eval_rewards/accuracies"])


def test_two_online_rounds_are_two_runs_of_the_workspaces_project_with_held_out_numbers_and_answers(
    tiny, tmp_path, no_network
):
    import trackio

    from mlx_dpo import api
    from mlx_dpo.models.generate import SampleSettings
    from mlx_dpo.settings import OnlineSettings

    judge = tmp_path / "judge.py"
    judge.write_text("def spaces(prompt, answer):\n    return answer.count(' ') / max(1, len(answer))\n")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Tell me about thing {i}.\n" for i in range(4)))
    workspace = tmp_path / f"ws-{uuid.uuid4().hex[:8]}"  # the project's name
    held_out = [[user("Describe a cat.")], [user("Describe a dog.")]]
    reports = api.run_online(
        workspace,
        prompts,
        f"{judge}:spaces",
        model=str(tiny),
        online=OnlineSettings(rounds=2, per_round=2),
        eval_prompts=held_out,
        sample_settings=SampleSettings(temperature=2.0, max_tokens=6),
        settings={"iters": 2, "batch_size": 2, "compile": False, "heldout_samples": 1, "report_to": "trackio"},
    )
    assert [r.version for r in reports] == ["v1", "v2"]

    assert [r.name for r in trackio.Api().runs(workspace.name)] == ["v1", "v2"]
    for report in reports:
        logs = trackio_logs(workspace.name, report.version)
        steps = [row for row in logs if "train/loss" in row]
        assert [row["step"] for row in steps] == [1, 2]  # a round reports every step
        [held] = [row for row in logs if "heldout/score" in row]
        assert held["step"] == 2  # at the round's last step
        for key in ("heldout/score", "heldout/kl", "heldout_base/score", "heldout/win_vs_base"):
            assert held[key] == pytest.approx(report.heldout[key]), key
        table = held["completions"]
        assert table["_type"] == "trackio.table"
        assert [(r["step"], r["prompt"]) for r in table["_value"]] == [(2, "Describe a cat."), (2, "Describe a dog.")]
        kept = (workspace / "heldout" / f"{report.version}.json").read_text()
        assert all(r["completion"] in kept for r in table["_value"])  # the version's own held-out answers


def test_a_missing_tracker_is_refused_in_one_line_before_anything_loads(tmp_path, monkeypatch, capsys):
    from mlx_dpo.cli import main

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a)
    )
    data = write_demo_pairs(tmp_path / "t.jsonl", 2)
    assert (
        main(["train", "--data", str(data), "--model", str(tmp_path / "never-loaded"), "--report-to", "trackio"]) == 2
    )
    assert capsys.readouterr().err == (
        "mlx-dpo: error: --report-to trackio needs trackio; run: pip install "
        "'mlx-dpo[trackio]' (or pip install trackio)\n"
    )
