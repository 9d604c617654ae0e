"""One configuration path: every setting's name, default, help and check come from its dataclass field.

No model is loaded here. What each check says on the command line, for every checked setting, is
tests/test_option_checks.py's; here, that the flags, config keys and API keywords are the fields' own.
"""

from __future__ import annotations

import argparse

import pytest

from mlx_dpo.cli import build_parser, main
from mlx_dpo.group_settings import GroupSettings
from mlx_dpo.options import SettingError, resolve, settings_of, shown
from mlx_dpo.settings import TRAIN_GROUPS, LoraSettings, RoundSettings, RunOptions, TrainingArgs
from mlx_dpo.training.run import _split_kwargs

SETTINGS = settings_of(*TRAIN_GROUPS, RoundSettings, GroupSettings)
# The train command's own arguments: what to train on, with which model, into which folder, how.
COMMAND_FLAGS = {
    "-h",
    "--help",
    "--data",
    "--model",
    "--adapter-path",
    "--resume",
    "--config",
    "--incremental",
    "--workspace",
}
# Every training flag `mlx-dpo train` had before its flags were read from the dataclasses.
FLAGS_BEFORE = [
    "--valid-data",
    "--init-adapter",
    "--iters",
    "--epochs",
    "--batch-size",
    "--grad-accum",
    "--learning-rate",
    "--lr-schedule",
    "--warmup-steps",
    "--weight-decay",
    "--max-grad-norm",
    "--beta",
    "--loss",
    "--label-smoothing",
    "--rpo-alpha",
    "--simpo-gamma",
    "--max-length",
    "--max-prompt-length",
    "--lora-rank",
    "--lora-alpha",
    "--lora-dropout",
    "--lora-layers",
    "--lora-keys",
    "--dora",
    "--grad-checkpoint",
    "--full-logits",
    "--no-shared-prompt",
    "--no-compile",
    "--seed",
    "--steps-per-report",
    "--steps-per-eval",
    "--save-every",
    "--metrics-file",
    "--skip-invalid",
    "--replay",
]
EVAL_FLAGS_BEFORE = [
    "--beta",
    "--loss",
    "--batch-size",
    "--max-length",
    "--skip-invalid",
    "--full-logits",
    "--no-shared-prompt",
]


def _parser(command: str) -> argparse.ArgumentParser:
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _flags(command: str) -> dict[str, argparse.Action]:
    return {flag: action for action in _parser(command)._actions for flag in action.option_strings}


def test_every_train_flag_is_a_setting_of_a_dataclass_field_and_every_setting_has_its_flag():
    flags = _flags("train")
    for flag, action in flags.items():
        if flag in COMMAND_FLAGS:
            continue
        assert action.dest in SETTINGS, f"{flag} is no dataclass field"
        assert SETTINGS[action.dest].flag == flag
    assert {s.flag for s in SETTINGS.values()} <= set(flags)


def test_every_flag_spelling_of_before_still_parses():
    assert set(FLAGS_BEFORE) <= set(_flags("train"))
    assert set(EVAL_FLAGS_BEFORE) <= set(_flags("eval"))
    args = _parser("train").parse_args(
        [
            "--lora-layers",
            "2",
            "--loss",
            "ipo",
            "--no-shared-prompt",
            "--no-compile",
            "--full-logits",
            "--dora",
            "--lora-keys",
            "self_attn.q_proj, self_attn.v_proj",
        ]
    )
    assert (
        args.lora_num_layers,
        args.loss_type,
        args.shared_prompt,
        args.compile,
        args.full_logits,
        args.lora_dora,
        args.lora_keys,
    ) == (2, "ipo", False, False, True, True, ["self_attn.q_proj", "self_attn.v_proj"])


def test_help_texts_print_the_dataclass_defaults():
    flags = _flags("train")
    for setting in SETTINGS.values():
        text = shown(setting.default)
        if text is not None and setting.default_text is None and setting.kind is not bool:
            assert f"(default {text})" in flags[setting.flag].help, setting.flag
    assert "(default 5e-5)" in flags["--learning-rate"].help and "(default all)" in flags["--lora-layers"].help
    assert "(default 0.1)" in _flags("eval")["--beta"].help


def test_the_api_keywords_and_config_keys_of_before_name_the_same_settings():
    given, run, args, lora = _split_kwargs(
        {
            "lora_num_layers": 2,
            "loss_type": "ipo",
            "lora_rank": 4,
            "shared_prompt": False,
            "compile": False,
            "max_length": 64,
        }
    )
    assert (lora.num_layers, lora.rank, args.loss_type, args.shared_prompt, args.compile, run.max_length) == (
        2,
        4,
        "ipo",
        False,
        False,
        64,
    )
    # Config files used the flags' spellings, with dashes or underscores; YAML may hand a number over as text.
    values, unknown = resolve(
        {
            "lora-layers": 3,
            "loss": "hinge",
            "no_shared_prompt": True,
            "no-compile": True,
            "dora": True,
            "lora_keys": "a,b",
            "learning_rate": "1e-3",
            "learning_rat": 1,
        },
        SETTINGS,
    )
    assert values == {
        "lora_num_layers": 3,
        "loss_type": "hinge",
        "shared_prompt": False,
        "compile": False,
        "lora_dora": True,
        "lora_keys": ["a", "b"],
        "learning_rate": 1e-3,
    }
    assert unknown == ["learning_rat"]
    with pytest.raises(TypeError, match="unknown training option.*learning_rat"):
        _split_kwargs({"learning_rat": 1e-4})
    # --dora used to reach the API as `dora`, which it did not know; it is LoraSettings.dora either way.
    assert _split_kwargs({"dora": True})[3].dora and _split_kwargs({"lora_dora": True})[3].dora


def test_a_rule_that_depends_on_another_setting_sees_it():
    # (On the command line: tests/test_option_checks.py, --label-smoothing with --loss hinge.)
    with pytest.raises(
        SettingError,
        match="label_smoothing applies only to loss types cdpo, robust, exo_pair, aot, aot_unpaired, not 'hinge'",
    ):
        TrainingArgs(loss_type="hinge", label_smoothing=0.1)
    TrainingArgs(loss_type="robust", label_smoothing=0.1)


def test_the_dataclasses_check_their_values_in_the_api_words():
    for make, message in [
        (lambda: TrainingArgs(beta=0), "beta must be > 0 (got 0)"),
        (lambda: TrainingArgs(loss_type="dpo"), "unknown loss_type 'dpo'; choose from sigmoid"),
        (lambda: LoraSettings(rank=0), "lora_rank must be at least 1 (got 0)"),
        (lambda: RunOptions(max_length=0), "max_length must be at least 1 (got 0)"),
        (lambda: RoundSettings(replay=-1), "replay must be at least 0 (got -1)"),
    ]:
        with pytest.raises(SettingError) as raised:
            make()
        assert str(raised.value).startswith(message)


def test_a_config_file_key_given_twice_or_not_a_number_is_refused(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('data = "x.jsonl"\nloss = "ipo"\nloss_type = "ipo"\n')
    assert main(["train", "--config", str(config)]) == 2
    assert f"{config}: loss_type is given twice" in capsys.readouterr().err
    config.write_text('data = "x.jsonl"\niters = "many"\n')
    assert main(["train", "--config", str(config)]) == 2
    assert f"{config}: iters must be a whole number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, value",
    [
        ("false", False),
        ("No", False),
        ("0", False),
        ("off", False),
        ("true", True),
        ("YES", True),
        ("1", True),
        ("on", True),
    ],
)
def test_a_yes_no_given_as_text_means_what_it_says(text, value):
    given, _ = resolve({"lora_dora": text, "no_compile": text}, settings_of(LoraSettings, TrainingArgs))
    assert given == {"lora_dora": value, "compile": not value}


def test_a_yes_no_that_is_neither_is_refused_naming_its_file(tmp_path, capsys):
    config = tmp_path / "run.toml"
    for line in ('lora_dora = "maybe"', "lora_dora = 2"):
        config.write_text(f'data = "x.jsonl"\n{line}\n')
        assert main(["train", "--config", str(config)]) == 2
        assert f"{config}: lora_dora must be true or false" in capsys.readouterr().err
