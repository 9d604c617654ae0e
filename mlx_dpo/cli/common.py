"""Arguments that several commands share, with one help text each."""

from __future__ import annotations

import argparse

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.options import SettingError, add_flags, check, settings_of
from mlx_dpo.settings import RunOptions

WORKSPACE_HELP = "workspace folder holding preferences.sqlite (default: ./mlx-dpo-workspace)"


def add_model_args(p: argparse.ArgumentParser, adapter: bool = True) -> None:
    p.add_argument(
        "--model",
        help="Hugging Face repo id, local mlx-lm folder, or GGUF file (default: embedded SmolLM2-135M-Instruct)",
    )
    if adapter:
        p.add_argument("--adapter-path", help="LoRA adapter folder (mlx-lm format) to apply")


def add_template_flag(p: argparse.ArgumentParser) -> None:
    """--chat-template, for commands that load a model without the training settings (generate, the app)."""
    add_flags(p, [settings_of(RunOptions)["chat_template"]])


def checked_template(args: argparse.Namespace) -> str | None:
    """--chat-template's value, checked by its setting's one rule (mlx_dpo.settings.RunOptions)."""
    setting = settings_of(RunOptions)["chat_template"]
    value = getattr(args, setting.name, None)
    try:
        check({setting.name: value} if value is not None else {}, {setting.name: setting})
    except SettingError as e:
        raise MlxDpoError(e.message(setting.flag)) from None
    return value
