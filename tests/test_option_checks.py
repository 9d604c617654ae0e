"""Every check of a command-line option: its exact message and exit status 2, before anything loads.

The table CHECKS holds, per checked setting of mlx_dpo/settings.py (each field with `check=`), bad values
and the one line each must give, plus the closest value the rule accepts; a test makes sure the table
covers every checked field, so a new checked setting without a row here fails. The other commands'
argparse checks (choices, required arguments, numbers that do not parse) follow.

The commands run in this process through `mlx_dpo.cli.main`, which is what the `mlx-dpo` script calls:
a setting is checked before any model or data is read, so nothing here waits for a model. Two cases run
the real script in a child process, to show the same message and status reach a user's shell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from helpers import assert_clean_error, run_cli

from mlx_dpo.cli import build_parser, main
from mlx_dpo.cli.train import EVAL_SETTINGS
from mlx_dpo.options import check, given_flags, settings_of
from mlx_dpo.settings import LOSS_TYPES, TRAIN_GROUPS, RoundSettings

SETTINGS = settings_of(*TRAIN_GROUPS, RoundSettings)
LOSSES = ", ".join(LOSS_TYPES)

# flag -> ([(the flag's value and any other flags, the message after "mlx-dpo: error: ")], an accepted value
# or None when the rule accepts none yet)
CHECKS: dict[str, tuple[list[tuple[list[str], str]], list[str] | None]] = {
    "--max-length": ([(["0"], "--max-length must be at least 1 (got 0)")], ["1"]),
    "--max-prompt-length": ([(["-1"], "--max-prompt-length must be at least 0 (got -1)")], ["0"]),
    "--report-to": ([(["wandb"], "--report-to wandb: unknown tracker (choose from none, trackio)")], ["trackio"]),
    "--iters": ([(["0"], "--iters must be at least 1 (got 0)")], ["1"]),
    "--epochs": ([(["0"], "--epochs must be > 0 (got 0.0)"), (["-1"], "--epochs must be > 0 (got -1.0)")], ["0.01"]),
    "--batch-size": ([(["0"], "--batch-size must be at least 1 (got 0)")], ["1"]),
    "--grad-accum": ([(["0"], "--grad-accum must be at least 1 (got 0)")], ["1"]),
    "--learning-rate": ([(["0"], "--learning-rate must be > 0 (got 0.0)")], ["1e-9"]),
    "--lr-schedule": (
        [(["linear"], "--lr-schedule linear: unknown schedule (choose from cosine, constant)")],
        ["constant"],
    ),
    "--warmup-steps": ([(["-1"], "--warmup-steps must be at least 0 (got -1)")], ["0"]),
    "--weight-decay": ([(["-0.1"], "--weight-decay must be at least 0 (got -0.1)")], ["0"]),
    "--max-grad-norm": ([(["-1"], "--max-grad-norm must be at least 0 (got -1.0)")], ["0"]),
    "--beta": ([(["0"], "--beta must be > 0 (got 0.0)")], ["0.001"]),
    "--loss": (
        [
            (["dpo-max"], f"--loss dpo-max: unknown loss (choose from {LOSSES})"),
            (["sigmoid,nope"], f"--loss nope: unknown loss (choose from {LOSSES})"),
            (["sigmoid,kto"], "--loss combines orpo or kto with other losses; they each train alone (got sigmoid,kto)"),
            (["sigmoid,sigmoid"], "--loss names a loss twice (got sigmoid,sigmoid)"),
        ],
        ["sigmoid,sft"],
    ),
    # A list is shown as it was typed, not as Python prints it.
    "--loss-weights": (
        [
            (["1,2"], "--loss-weights needs one weight per loss (1) (got 1,2)"),
            (["-1"], "--loss-weights must be at least 0 (got -1)"),
            (["a"], "--loss-weights must be numbers (got a)"),
        ],
        ["0.5"],
    ),
    "--label-smoothing": (
        [
            (["0.5", "--loss", "cdpo"], "--label-smoothing must be in [0, 0.5) (got 0.5)"),
            (
                ["0", "--loss", "exo_pair"],
                "--label-smoothing must be in (0, 1) for exo_pair (the EXO paper uses 1e-3) (got 0.0)",
            ),
            (
                ["0.1"],
                "--label-smoothing is not part of TRL 1.16's sigmoid loss; use --loss cdpo for "
                "conservative DPO (got 0.1)",
            ),
            (
                ["0.1", "--loss", "hinge"],
                "--label-smoothing applies only to loss types cdpo, robust, "
                "exo_pair, aot, aot_unpaired, not 'hinge' (got 0.1)",
            ),
        ],
        ["0.49", "--loss", "cdpo"],
    ),
    "--f-divergence-type": (
        [
            (
                ["kl"],
                "--f-divergence-type kl: unknown divergence (choose from reverse_kl, forward_kl, "
                "js_divergence, alpha_divergence)",
            ),
            (
                ["forward_kl", "--loss", "ipo,nca_pair"],
                "--f-divergence-type applies only to the losses of a chosen − rejected score difference "
                "(sigmoid, cdpo, robust, hinge, ipo, exo_pair, discopop, sigmoid_norm, sft), not nca_pair, "
                "as in TRL (got forward_kl)",
            ),
        ],
        ["js_divergence"],
    ),
    "--ld-alpha": (
        [(["2"], "--ld-alpha must be in [0, 1] (got 2.0)"), (["-0.1"], "--ld-alpha must be in [0, 1] (got -0.1)")],
        ["1"],
    ),
    "--use-weighting": (
        [
            (
                ["--loss", "aot"],
                "--use-weighting (WPO) does not apply to --loss aot, aot_unpaired (they "
                "sort the batch), orpo or kto (got True)",
            )
        ],
        ["--loss", "sigmoid,sft"],
    ),
    "--discopop-tau": ([(["0"], "--discopop-tau must be > 0 (got 0.0)")], ["0.01"]),
    "--desirable-weight": ([(["0"], "--desirable-weight must be > 0 (got 0.0)")], ["0.5"]),
    "--undesirable-weight": ([(["0"], "--undesirable-weight must be > 0 (got 0.0)")], ["0.5"]),
    "--rpo-alpha": ([(["-1"], "--rpo-alpha must be at least 0 (got -1.0)")], ["0"]),
    "--seed": ([(["-1"], "--seed must be at least 0 (got -1)")], ["0"]),
    "--steps-per-report": ([(["0"], "--steps-per-report must be at least 1 (got 0)")], ["1"]),
    "--steps-per-eval": ([(["0"], "--steps-per-eval must be at least 1 (got 0)")], ["1"]),
    "--save-every": ([(["0"], "--save-every must be at least 1 (got 0)")], ["1"]),
    "--lora-rank": ([(["0"], "--lora-rank must be at least 1 (got 0)")], ["1"]),
    "--lora-alpha": ([(["0"], "--lora-alpha must be > 0 (got 0.0)")], ["0.1"]),
    "--lora-dropout": (
        [
            (["1"], "--lora-dropout must be in [0, 1) (got 1.0)"),
            (["-0.1"], "--lora-dropout must be in [0, 1) (got -0.1)"),
        ],
        ["0.99"],
    ),
    "--lora-layers": (
        [
            (["0"], "--lora-layers must be -1 (all) or at least 1 (got 0)"),
            (["-2"], "--lora-layers must be -1 (all) or at least 1 (got -2)"),
        ],
        ["-1"],
    ),
    "--replay": ([(["-0.5", "--incremental"], "--replay must be at least 0 (got -0.5)")], ["0", "--incremental"]),
    "--passes": ([(["0", "--incremental"], "--passes must be > 0 (got 0.0)")], ["0.5", "--incremental"]),
    "--min-steps": ([(["0", "--incremental"], "--min-steps must be at least 1 (got 0)")], ["1", "--incremental"]),
    "--max-steps": (
        [
            (["0", "--incremental"], "--max-steps must be at least 1 (got 0)"),
            (["3", "--min-steps", "4", "--incremental"], "--max-steps must be at least --min-steps (4) (got 3)"),
        ],
        ["4", "--min-steps", "4", "--incremental"],
    ),
    "--reference": (
        [(["latest", "--incremental"], "--reference latest: unknown reference (choose from base, previous)")],
        ["previous", "--incremental"],
    ),
    "--heldout-samples": (
        [(["-1", "--incremental"], "--heldout-samples must be at least 0 (got -1)")],
        ["0", "--incremental"],
    ),
    "--heldout-prompts": (
        [(["0", "--incremental"], "--heldout-prompts must be at least 1 (got 0)")],
        ["1", "--incremental"],
    ),
    "--accept": (
        [(["sometimes", "--incremental"], "--accept sometimes: unknown accept rule (choose from always, kl, better)")],
        ["kl", "--incremental"],
    ),
    "--kl-budget": ([(["0", "--incremental"], "--kl-budget must be > 0 (got 0.0)")], ["0.01", "--incremental"]),
    "--chat-template": (
        [(["no-such-template.jinja"], "--chat-template is not a file (got no-such-template.jinja)")],
        [str(Path(__file__).resolve().parent / "templates" / "gemma3.jinja")],
    ),
}
BAD_CASES = [
    pytest.param(flag, argv, message, id=f"{flag}={' '.join(argv)}".rstrip("="))
    for flag, (cases, _) in CHECKS.items()
    for argv, message in cases
]


def _error(capsys, *argv: str) -> str:
    """Run `mlx-dpo ARGV` here; it must exit with 2 and one line. Returns the line after "mlx-dpo: error: "."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mlx-dpo: error: ") and err.count("\n") == 1, err
    return err.removeprefix("mlx-dpo: error: ").rstrip("\n")


def test_the_table_covers_every_checked_setting():
    assert set(CHECKS) == {s.flag for s in SETTINGS.values() if s.check is not None}


@pytest.mark.parametrize("flag, argv, message", BAD_CASES)
def test_train_refuses_a_bad_value_with_its_message_and_exit_2(capsys, tmp_path, flag, argv, message):
    # --data names a file that does not exist: the check must come first.
    assert _error(capsys, "train", "--data", str(tmp_path / "never-read.jsonl"), flag, *argv) == message


@pytest.mark.parametrize("flag", sorted(flag for flag, (_, good) in CHECKS.items() if good is not None))
def test_the_closest_good_value_passes_the_same_check(flag):
    # The rule is not stricter than its message says: the value next to the bad ones is accepted.
    parser, _ = build_parser()
    args = parser.parse_args(["train", flag, *CHECKS[flag][1]])
    check(given_flags(args, SETTINGS.values()), SETTINGS)


EVAL_CHECKED = [s.flag for name, s in SETTINGS.items() if name in EVAL_SETTINGS and s.check is not None]


@pytest.mark.parametrize("flag", EVAL_CHECKED)
def test_eval_refuses_the_same_bad_values_with_the_same_messages(capsys, flag):
    argv, message = next((a, m) for a, m in CHECKS[flag][0] if all(not x.startswith("--") for x in a))
    assert _error(capsys, "eval", "--data", "never-read.jsonl", flag, *argv) == message


def test_eval_has_a_check_for_each_checked_setting_it_shares_with_train():
    assert {"--beta", "--loss", "--batch-size", "--max-length"} <= set(EVAL_CHECKED)


# --- what the command-line parser itself refuses --------------------------------------------------------------


def _argparse_error(capsys, *argv: str) -> str:
    """argparse's refusal: exit 2, its usage, then one error line naming the argument. Returns that line."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


NUMBERS = [s for s in SETTINGS.values() if s.kind in (int, float)]


@pytest.mark.parametrize("setting", NUMBERS, ids=[s.flag for s in NUMBERS])
def test_a_number_setting_refuses_text_that_is_no_number(capsys, setting):
    kind = "int" if setting.kind is int else "float"
    line = _argparse_error(capsys, "train", "--data", "x.jsonl", setting.flag, "many")
    assert line == f"mlx-dpo train: error: argument {setting.flag}: invalid {kind} value: 'many'"


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            ["export", "--adapter-path", "a", "--out", "o", "--format", "onnx"],
            "mlx-dpo export: error: argument --format: invalid choice: 'onnx' (choose from hf, peft, gguf)",
        ),
        (
            ["export", "--adapter-path", "a", "--out", "o", "--gguf-type", "q4_0"],
            "mlx-dpo export: error: argument --gguf-type: invalid choice: 'q4_0' (choose from f16, q8_0)",
        ),
        (["export", "--out", "o"], "mlx-dpo export: error: the following arguments are required: --adapter-path"),
        (["export", "--adapter-path", "a"], "mlx-dpo export: error: the following arguments are required: --out"),
        (["push", "--adapter-path", "a"], "mlx-dpo push: error: the following arguments are required: --repo"),
        (["generate"], "mlx-dpo generate: error: the following arguments are required: --prompt"),
        (
            ["generate", "--prompt", "hi", "--max-tokens", "lots"],
            "mlx-dpo generate: error: argument --max-tokens: invalid int value: 'lots'",
        ),
        (
            ["generate", "--prompt", "hi", "--temperature", "warm"],
            "mlx-dpo generate: error: argument --temperature: invalid float value: 'warm'",
        ),
        (["eval"], "mlx-dpo eval: error: the following arguments are required: --data"),
        (["data"], "mlx-dpo data: error: the following arguments are required: ACTION"),
        (
            ["data", "import", "x.jsonl", "--split", "test"],
            "mlx-dpo data import: error: argument --split: invalid choice: 'test' (choose from train, valid)",
        ),
        (
            ["data", "export", "x.jsonl", "--style", "chatml"],
            "mlx-dpo data export: error: argument --style: invalid choice: 'chatml' "
            "(choose from conversational, standard)",
        ),
        (
            ["fly"],
            "mlx-dpo: error: argument COMMAND: invalid choice: 'fly' (choose from doctor, generate, train, eval, data, "
            "export, push, online, convert, tui)",
        ),
        (["online", "--judge", "human"], "mlx-dpo online: error: the following arguments are required: --prompts"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_the_parser_refuses_bad_arguments_of_every_command(capsys, argv, line):
    # (Python 3.11's argparse quotes the choices, later versions do not.)
    assert _argparse_error(capsys, *argv).replace("'", "") == line.replace("'", "")


# --- the train command's own checks -------------------------------------------------------------------------


def test_train_without_data_is_refused(capsys):
    assert _error(capsys, "train", "--iters", "1") == "--data is required (on the command line or in --config)"


def test_a_config_file_that_cannot_be_read_or_parsed_is_refused_naming_it(capsys, tmp_path):
    missing = tmp_path / "missing.toml"
    assert (
        _error(capsys, "train", "--config", str(missing))
        == f"{missing}: cannot read config file (No such file or directory)"
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("iters = \n")
    assert _error(capsys, "train", "--config", str(broken)).startswith(f"{broken}: not valid TOML (")
    listed = tmp_path / "list.yaml"
    listed.write_text("- iters\n- 3\n")
    assert _error(capsys, "train", "--config", str(listed)) == f"{listed}: expected a table of options at the top level"


def test_a_bad_value_in_a_config_file_names_the_file_and_the_key(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: x.jsonl\nbatch-size: 0\n")
    # The key may be spelled as the flag; the message names the setting by its flag either way, after the file.
    assert _error(capsys, "train", "--config", str(config)) == f"{config}: --batch-size must be at least 1 (got 0)"


# --- the real script ----------------------------------------------------------------------------------------


def test_the_mlx_dpo_script_gives_the_same_line_and_status_to_the_shell(tmp_path):
    result = run_cli("train", "--data", str(tmp_path / "never-read.jsonl"), "--lora-dropout", "1")
    assert result.returncode == 2
    assert_clean_error(result, "mlx-dpo: error: --lora-dropout must be in [0, 1) (got 1.0)")
    assert result.stdout == ""
    result = run_cli("export", "--adapter-path", "a", "--out", "o", "--format", "onnx")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mlx-dpo export: error: argument --format: invalid choice")


# --- the sampler's settings: one name each, in generate and online (and the app's settings form) --------------


@pytest.mark.parametrize("command", [["generate", "--prompt", "hi"], ["online", "--prompts", "p.txt", "--judge", "j"]])
@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--temperature", "11", "--temperature must be between 0 and 10 (got 11.0)"),
        ("--top-p", "0", "--top-p must be in (0, 1] (got 0.0)"),
        ("--max-tokens", "0", "--max-tokens must be between 1 and 32768 (got 0)"),
        ("--sample-seed", "-1", "--sample-seed must be between 0 and 2^31-1 (got -1)"),
    ],
)
def test_the_sampler_settings_have_one_flag_and_one_check_in_every_command(capsys, command, flag, value, message):
    assert main([*command, flag, value]) == 2  # refused before any model, prompt file or judge is read
    assert capsys.readouterr().err.strip() == f"mlx-dpo: error: {message}"


def test_generates_old_flags_still_work_and_say_they_are_deprecated(capsys):
    parser, _ = build_parser()
    args = parser.parse_args(["generate", "--prompt", "hi", "--temp", "0.5", "--seed", "7"])
    assert (args.temperature, args.sample_seed) == (0.5, 7)
    assert capsys.readouterr().err.splitlines() == [
        "mlx-dpo: note: --temp is deprecated; use --temperature",
        "mlx-dpo: note: --seed is deprecated; use --sample-seed",
    ]
    assert main(["generate", "--prompt", "hi", "--temp", "11"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "mlx-dpo: error: --temperature must be between 0 and 10 (got 11.0)"
    )


def test_help_shows_the_options_in_the_settings_groups():
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    titles = {
        name: [g.title for g in sub.choices[name]._action_groups if g._group_actions]
        for name in ("train", "online", "generate")
    }
    assert titles["train"] == [
        "options",
        "data and outputs",
        "training",
        "LoRA adapter",
        "rounds",
        "group rounds (GRPO)",
    ]
    assert titles["online"] == [
        "options",
        "online rounds",
        "sampling",
        "data and outputs",
        "training",
        "LoRA adapter",
        "rounds",
        "group rounds (GRPO)",
    ]
    assert titles["generate"] == ["options", "sampling"]
