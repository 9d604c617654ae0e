"""What several commands share: the model arguments with one help text each, and reading settings from flags.

A command's settings come from their dataclasses (mlx_dpo.settings); `checked` applies each setting's one rule
and reports a bad value by its flag (exit 2), before anything loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.group_settings import GroupSettings
from mlx_dpo.options import Setting, SettingError, add_flags, check, given_flags, settings_of
from mlx_dpo.settings import TRAIN_GROUPS, RoundSettings, RunOptions, round_settings_table

WORKSPACE_HELP = "workspace folder holding preferences.sqlite (default: ./mlx-dpo-workspace)"


def add_model_args(p: argparse.ArgumentParser, adapter: bool = True) -> None:
    p.add_argument(
        "--model",
        help="Hugging Face repo id, local mlx-lm folder, or GGUF file (default: embedded SmolLM2-135M-Instruct)",
    )
    if adapter:
        p.add_argument("--adapter-path", help="LoRA adapter folder (mlx-lm format) to apply")


def train_settings(incremental: bool) -> Mapping[str, Setting]:
    """The settings `train` takes: a plain run's, or (incremental) a round's with a round's defaults."""
    if incremental:  # a round writes its own metrics into its own folder
        return {
            n: s
            for n, s in round_settings_table(*TRAIN_GROUPS, RoundSettings, GroupSettings).items()
            if n != "metrics_file"
        }
    return settings_of(*TRAIN_GROUPS)


def checked(given: dict[str, Any], settings: Mapping[str, Setting]) -> dict[str, Any]:
    """`given` (by setting name) after each setting's rule; a bad value is one line naming its flag."""
    try:
        check(given, settings)
    except SettingError as e:
        raise MlxDpoError(e.message(settings[e.name].flag)) from None
    return given


def add_template_flag(p: argparse.ArgumentParser) -> None:
    """--chat-template, for commands that load a model without the training settings (generate, the app)."""
    add_flags(p, [settings_of(RunOptions)["chat_template"]])


def checked_template(args: argparse.Namespace) -> str | None:
    """--chat-template's value, checked by its setting's one rule (mlx_dpo.settings.RunOptions)."""
    setting = settings_of(RunOptions)["chat_template"]
    return checked(given_flags(args, [setting]), {setting.name: setting}).get(setting.name)
