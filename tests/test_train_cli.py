"""`mlx-dpo train` and `mlx-dpo eval`, run in child processes as a user runs them.

All runs use a small random llama with the default model's tokenizer and a handful of demo pairs.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import pytest
from helpers import (
    TRL_STEP_FIELDS,
    assert_clean_error,
    held_child,
    read_metrics,
    run_cli,
    without_timing,
    write_demo_pairs,
)

from mlx_dpo.training import checkpoint

TINY_SEED = 12  # this module's `tiny` model (conftest.py)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny):
    """A completed `mlx-dpo train` run: 8 training pairs, 2 validation pairs, 3 steps."""
    root = tmp_path_factory.mktemp("finished")
    data = write_demo_pairs(root / "train.jsonl", 8)
    valid = write_demo_pairs(root / "valid.jsonl", 2, start=30)
    adapter = root / "adapter"
    result = run_cli(
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
        "3",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-3",
        "--steps-per-report",
        "1",
        "--save-every",
        "3",
        "--seed",
        "2",
    )
    assert result.returncode == 0, result.stderr
    return SimpleNamespace(data=data, valid=valid, adapter=adapter, stdout=result.stdout)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 2. kill and resume -------------------------------------------------------------------------------------


def test_a_killed_run_resumes_from_its_last_checkpoint_and_matches_an_uninterrupted_run(tmp_path, tiny, capsys):
    from mlx_dpo.cli import main

    data = write_demo_pairs(tmp_path / "pairs.jsonl", 8)

    def train_args(out: Path) -> list[str]:
        return [
            "train",
            "--model",
            str(tiny),
            "--data",
            str(data),
            "--adapter-path",
            str(out),
            "--iters",
            "6",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--learning-rate",
            "1e-3",
            "--lora-dropout",
            "0.1",
            "--save-every",
            "2",
            "--steps-per-report",
            "3",
            "--seed",
            "3",
        ]

    # The uninterrupted run, in this process (the same command; only the killed and the resumed runs need
    # processes of their own).
    assert main(train_args(tmp_path / "whole")) == 0, capsys.readouterr().err

    # The child holds after step 5 (reported; its last checkpoint is step 4's) and is killed there: the kill
    # lands at the same point on a fast machine and a slow one (mlx_dpo/training/pause.py).
    killed, release = tmp_path / "killed", tmp_path / "release"
    with held_child(
        train_args(killed), {"MLX_DPO_PAUSE_AT": "step:5", "MLX_DPO_PAUSE_FILE": str(release)}, release, "step 5"
    ):
        pass
    last = checkpoint.latest(killed)
    assert last == killed / "checkpoints" / "step-000004"
    # The kill lands inside the report window of steps 4-6: the checkpoint keeps its running sums (step 4's
    # batch of two pairs), so the resumed run reports steps 4-6, not only the steps after the restart.
    window = json.loads((last / checkpoint.STATE_FILE).read_text())["report_window"]
    assert window["pairs"] == 2 and "loss" in window["sums"]
    # What the killed run reported agrees with the uninterrupted run.
    whole_lines = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    killed_lines = read_metrics(killed / "metrics.jsonl")
    assert [line["step"] for line in killed_lines] == [3]
    assert [without_timing(line) for line in killed_lines] == [without_timing(line) for line in whole_lines[:1]]
    # ... and a kill can land mid-write, leaving half a line behind.
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 0.69')

    resumed = run_cli(*train_args(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [int(n) for n in re.findall(r"step (\d+)/6", resumed.stderr)] == [6]  # one report: steps 4-6

    # The resumed run reports what the uninterrupted run reports, the window that spans the kill included.
    resumed_lines = read_metrics(killed / "metrics.jsonl")
    assert [line["step"] for line in whole_lines] == [line["step"] for line in resumed_lines] == [3, 6]
    for expected, got in zip(map(without_timing, whole_lines), map(without_timing, resumed_lines)):
        assert expected.keys() == got.keys()
        assert all(got[key] == pytest.approx(value, abs=1e-6, rel=0) for key, value in expected.items()), got
    whole_adapter = mx.load(str(tmp_path / "whole" / "adapters.safetensors"))
    resumed_adapter = mx.load(str(killed / "adapters.safetensors"))
    assert all(mx.array_equal(whole_adapter[k], resumed_adapter[k]).item() for k in whole_adapter)
    assert json.loads(resumed.stdout.splitlines()[-1])["step"] == 6


# --- 5. bad input -------------------------------------------------------------------------------------------


def _with_a_bad_row(tmp_path: Path) -> Path:
    """Four rows; the third lacks 'rejected'."""
    good = write_demo_pairs(tmp_path / "good.jsonl", 3).read_text().splitlines()
    bad = json.dumps({"id": "no-rejected", "prompt": "Say hi.", "chosen": "Hi!"})
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join([good[0], good[1], bad, good[2]]) + "\n")
    return path


def test_bad_rows_stop_training_with_one_message_naming_file_line_and_field(tmp_path, tiny):
    data = _with_a_bad_row(tmp_path)
    out = tmp_path / "adapter"
    result = run_cli("train", "--model", str(tiny), "--data", str(data), "--adapter-path", str(out))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    # One error message (its lines list the bad rows), and it points at the row and the field.
    assert result.stderr.startswith("mlx-dpo: error:") and result.stderr.count("error:") == 1, result.stderr
    assert f"{data}:3: field 'rejected': is missing" in result.stderr
    assert "--skip-invalid" in result.stderr
    assert not out.exists()


def test_skip_invalid_drops_bad_rows_and_says_how_many(tmp_path, tiny):
    data = _with_a_bad_row(tmp_path)
    out = tmp_path / "adapter"
    result = run_cli(
        "train",
        "--model",
        str(tiny),
        "--data",
        str(data),
        "--adapter-path",
        str(out),
        "--skip-invalid",
        "--iters",
        "1",
        "--batch-size",
        "2",
    )

    assert result.returncode == 0, result.stderr
    assert f"{data}: skipped 1 invalid row" in result.stderr
    assert json.loads((out / "adapter_config.json").read_text())["mlx_dpo"]["num_pairs"] == 3


def test_an_unknown_loss_is_refused_before_anything_is_written(tmp_path, tiny):
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 3)
    out = tmp_path / "adapter"
    result = run_cli(
        "train", "--model", str(tiny), "--data", str(data), "--adapter-path", str(out), "--loss", "dpo-max"
    )
    assert result.returncode == 2
    assert_clean_error(result, "--loss dpo-max", "unknown loss", "sigmoid")
    assert not out.exists()


TOML_CONFIG = """\
data = "{data}"
valid_data = "{valid}"
model = "{model}"
iters = 3
batch_size = 2
lora_rank = 4
learning_rate = 1e-3
steps_per_report = 1
steps_per_eval = 2
seed = 5
"""
YAML_CONFIG = """\
# dashes or underscores, as on the command line
data: {data}
valid-data: {valid}
model: {model}
iters: 3
batch-size: 2
lora-rank: 4
learning_rate: 1.0e-3
steps-per-report: 1
steps_per_eval: 2
seed: 5
"""


@pytest.mark.parametrize("name, text", [("run.toml", TOML_CONFIG), ("run.yaml", YAML_CONFIG)], ids=["toml", "yaml"])
def test_a_config_file_gives_options_and_flags_override_it(tmp_path, tiny, name, text):
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 4)
    valid = write_demo_pairs(tmp_path / "valid.jsonl", 2, start=30)
    config = tmp_path / name
    config.write_text(text.format(data=data, valid=valid, model=tiny))
    out = tmp_path / "adapter"

    result = run_cli("train", "--config", str(config), "--adapter-path", str(out), "--iters", "2")

    assert result.returncode == 0, result.stderr
    lines = read_metrics(out / "metrics.jsonl")
    assert [line["step"] for line in lines if "loss" in line] == [1, 2]  # --iters 2 beat the file's 3
    assert [line["step"] for line in lines if "eval_loss" in line] == [2]  # valid data and steps_per_eval
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["lora_parameters"]["rank"] == 4  # from the file
    assert json.loads(result.stdout.splitlines()[-1])["adapter_path"] == str(out)


def test_a_config_file_with_an_unknown_option_is_refused(tmp_path, tiny):
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 3)
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{data}"\nmodel = "{tiny}"\nlearning_rat = 1e-4\n')
    out = tmp_path / "adapter"
    result = run_cli("train", "--config", str(config), "--adapter-path", str(out))
    assert result.returncode == 2
    assert_clean_error(result, str(config), "unknown option", "learning_rat")
    assert not out.exists()


def test_resume_without_a_checkpoint_is_refused(tmp_path, tiny):
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 3)
    out = tmp_path / "adapter"
    result = run_cli("train", "--model", str(tiny), "--data", str(data), "--adapter-path", str(out), "--resume")
    assert result.returncode == 2
    assert_clean_error(result, str(out), "no checkpoint to resume from")
    assert not out.exists()


def test_a_second_run_into_a_used_adapter_path_is_refused_without_resume(finished_run, tiny):
    before = _files(finished_run.adapter)
    result = run_cli(
        "train",
        "--model",
        str(tiny),
        "--data",
        str(finished_run.data),
        "--adapter-path",
        str(finished_run.adapter),
        "--iters",
        "1",
    )
    assert result.returncode == 2
    assert_clean_error(result, str(finished_run.adapter), "already holds a training run", "--resume")
    assert _files(finished_run.adapter) == before


def test_training_into_a_folder_that_holds_an_adapter_is_refused(tmp_path, finished_run, tiny):
    out = tmp_path / "someone-elses-adapter"  # an adapter folder with no checkpoints, e.g. made by mlx-lm
    out.mkdir()
    for name in ("adapter_config.json", "adapters.safetensors"):
        (out / name).write_bytes((finished_run.adapter / name).read_bytes())
    before = _files(out)
    result = run_cli(
        "train", "--model", str(tiny), "--data", str(finished_run.data), "--adapter-path", str(out), "--iters", "1"
    )
    assert result.returncode == 2
    assert_clean_error(result, str(out), "already holds an adapter")
    assert _files(out) == before


# --- 6. eval ------------------------------------------------------------------------------------------------

PER_EXAMPLE_FIELDS = {
    "id",
    "policy_chosen_logp",
    "policy_rejected_logp",
    "ref_chosen_logp",
    "ref_rejected_logp",
    "chosen_tokens",
    "rejected_tokens",
}


def _eval(tiny: Path, data: Path, out: Path, *adapter: str) -> tuple[dict, list[dict]]:
    result = run_cli("eval", "--data", str(data), "--model", str(tiny), *adapter, "--per-example", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, rows


def test_eval_reports_accuracy_margin_loss_and_per_pair_logprobs(tmp_path, tiny, finished_run):
    summary, rows = _eval(
        tiny, finished_run.valid, tmp_path / "per_pair.jsonl", "--adapter-path", str(finished_run.adapter)
    )

    assert {"accuracy", "margin", "loss", "n_pairs"} <= set(summary)
    assert summary["n_pairs"] == 2 == len(rows)
    assert [row["id"] for row in rows] == ["demo-31", "demo-32"]
    beta = 0.1
    margins = []
    for row in rows:
        assert set(row) == PER_EXAMPLE_FIELDS
        assert row["chosen_tokens"] > 1 and row["rejected_tokens"] > 1
        assert all(row[k] < 0 for k in PER_EXAMPLE_FIELDS if k.endswith("_logp"))
        margins.append(
            beta
            * (
                (row["policy_chosen_logp"] - row["ref_chosen_logp"])
                - (row["policy_rejected_logp"] - row["ref_rejected_logp"])
            )
        )
    assert any(row["policy_chosen_logp"] != row["ref_chosen_logp"] for row in rows)  # the adapter is applied
    # The summary is the mean over the pairs of DPO's implicit reward margin, accuracy and sigmoid loss.
    assert summary["margin"] == pytest.approx(sum(margins) / 2, rel=1e-4, abs=1e-6)
    assert summary["accuracy"] == sum(m > 0 for m in margins) / 2
    losses = [math.log1p(math.exp(-m)) for m in margins]
    assert summary["loss"] == pytest.approx(sum(losses) / 2, rel=1e-4)


def test_eval_without_an_adapter_scores_the_reference_against_itself(tmp_path, tiny, finished_run):
    summary, rows = _eval(tiny, finished_run.valid, tmp_path / "per_pair.jsonl")

    for row in rows:
        assert row["policy_chosen_logp"] == pytest.approx(row["ref_chosen_logp"], abs=1e-4)
        assert row["policy_rejected_logp"] == pytest.approx(row["ref_rejected_logp"], abs=1e-4)
    assert summary["margin"] == pytest.approx(0.0, abs=1e-5)
    assert summary["loss"] == pytest.approx(math.log(2), abs=1e-5)


# --- 8. metrics from the command line -----------------------------------------------------------------------


def test_train_writes_trl_named_metrics_and_prefixed_eval_lines(finished_run):
    lines = read_metrics(finished_run.adapter / "metrics.jsonl")
    step_lines = [line for line in lines if "loss" in line]
    eval_lines = [line for line in lines if "eval_loss" in line]
    assert len(step_lines) + len(eval_lines) == len(lines)
    assert [line["step"] for line in step_lines] == [1, 2, 3]
    for line in step_lines:
        assert TRL_STEP_FIELDS | {
            "tokens_per_second",
            "peak_memory_gb",
            "ref_cache/hits",
            "ref_cache/misses",
        } <= set(line)
    assert [line["step"] for line in eval_lines] == [3]  # the last step always evaluates
    assert {
        "eval_loss",
        "eval_rewards/chosen",
        "eval_rewards/rejected",
        "eval_rewards/margins",
        "eval_rewards/accuracies",
        "eval_logps/chosen",
        "eval_logps/rejected",
    } <= set(eval_lines[0])
    assert all(k == "step" or k.startswith("eval_") for k in eval_lines[0])
    # The command's last stdout line is the final report, eval included.
    final = json.loads(finished_run.stdout.splitlines()[-1])
    assert final["step"] == 3 and final["eval_loss"] == eval_lines[0]["eval_loss"]
