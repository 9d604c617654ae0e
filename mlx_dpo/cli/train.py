"""`mlx-dpo train` and `mlx-dpo eval`: settings from flags and a config file, then the library's run.

The settings' flags are built from their dataclasses (mlx_dpo.settings): one flag, help text and default
each. A config file (--config, TOML or YAML) takes the same names, with dashes or underscores, and sits
between those defaults and the flags given. Every value is checked by its setting's one rule before
anything loads, and a bad one is reported naming its flag (exit 2).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlx_dpo import api  # light: its heavy names (train, evaluate, ...) load the library when a command runs
from mlx_dpo.cli.common import WORKSPACE_HELP, add_model_args, checked, train_settings
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.group_settings import GroupSettings
from mlx_dpo.options import Setting, SettingError, add_flag_groups, check, given_flags, resolve, settings_of
from mlx_dpo.progress import ProgressPrinter
from mlx_dpo.settings import EVAL_LOSS_SETTINGS, TRAIN_GROUPS, RoundSettings

# What a config file may hold besides the settings: the run's pairs, model and folder.
COMMAND_KEYS = ("data", "model", "adapter_path", "resume")
# The settings `mlx-dpo eval` shares with `train`.
EVAL_SETTINGS = (
    "beta",
    "loss_type",
    "batch_size",
    "max_length",
    "skip_invalid",
    "full_logits",
    "shared_prompt",
    "data_config",
    "chat_template",
    *EVAL_LOSS_SETTINGS,
)


def _read_config_file(path: str) -> dict:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise MlxDpoError(f"{path}: cannot read config file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise MlxDpoError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x}); save the file as UTF-8") from None
    try:
        if p.suffix == ".toml":
            import tomllib  # Python 3.11+; optional on 3.10

            data = tomllib.loads(text)
        else:
            import yaml  # optional: only a YAML config needs PyYAML

            data = yaml.safe_load(text) or {}
    except Exception as e:  # tomllib/yaml raise their own error types
        raise MlxDpoError(f"{path}: not valid {'TOML' if p.suffix == '.toml' else 'YAML'} ({e})") from None
    if not isinstance(data, dict):
        raise MlxDpoError(f"{path}: expected a table of options at the top level")
    return {k.replace("-", "_"): v for k, v in data.items()}  # dashes or underscores, as on the command line


def _eval_settings() -> Mapping[str, Setting]:
    return {n: s for n, s in settings_of(*TRAIN_GROUPS).items() if n in EVAL_SETTINGS}


def _options(
    args: argparse.Namespace, settings: Mapping[str, Setting], command_keys: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(command keys, settings by name): from --config, overridden by the flags actually given, checked."""
    raw = _read_config_file(args.config) if getattr(args, "config", None) else {}
    command = {k: v for k, v in raw.items() if k in command_keys}
    try:
        given, unknown = resolve({k: v for k, v in raw.items() if k not in command_keys}, settings)
    except MlxDpoError as e:  # a value that does not parse, a setting given twice
        raise MlxDpoError(f"{args.config}: {e}") from None
    if unknown:
        raise MlxDpoError(f"{args.config}: unknown option(s): {', '.join(sorted(unknown))}")
    for key, value in command.items():  # a path or a name (resume: a yes/no), as its flag would give it
        if not isinstance(value, bool if key == "resume" else str):
            raise MlxDpoError(
                f"{args.config}: {key} must be {'true or false' if key == 'resume' else 'text'} "
                f"(got {json.dumps(value, default=str)})"
            )
    from_file = set(given)
    given.update(flags := given_flags(args, settings.values()))
    for key in command_keys:
        if getattr(args, key, None) not in (None, False):
            command[key] = getattr(args, key)
    try:
        check(given, settings)
    except SettingError as e:  # by its flag; and by the file, when the file gave the value
        where = f"{args.config}: " if e.name in from_file and e.name not in flags else ""
        raise MlxDpoError(where + e.message(settings[e.name].flag)) from None
    return command, given


def cmd_train(args: argparse.Namespace) -> int:
    if args.incremental:  # one round on the workspace's store (mlx_dpo.training.rounds)
        command, settings = _options(args, train_settings(incremental=True), ("model",))
        workspace = args.workspace or PreferenceStore.default_workspace()
        result = api.run_round(workspace, model=command.get("model"), settings=settings, on_event=ProgressPrinter())
        print(
            json.dumps(
                {
                    "version": result.version,
                    "adapter_path": str(result.adapter_path),
                    "status": result.status,
                    **result.metrics,
                }
            )
        )
        return 0
    round_flags = [
        s.flag for s in settings_of(RoundSettings, GroupSettings).values() if getattr(args, s.name, None) is not None
    ]
    if round_flags:  # a round's setting on a plain run would be ignored without a word
        raise MlxDpoError(f"{round_flags[0]} applies to a round: add --incremental (and --workspace)")
    command, settings = _options(args, train_settings(incremental=False), COMMAND_KEYS)
    if "data" not in command:
        raise MlxDpoError("--data is required (on the command line or in --config)")
    data = command.pop("data")
    result = api.train(data, on_event=ProgressPrinter(), **command, **settings)
    if result.rank == 0:  # under mlx.launch every rank runs this command; rank 0 answers for the group
        print(json.dumps({"adapter_path": str(result.adapter_path), **result.metrics, **result.eval_metrics}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    settings = checked(given_flags(args, _eval_settings().values()), _eval_settings())
    result = api.evaluate(
        args.data,
        model=args.model,
        adapter_path=args.adapter_path,
        per_example=args.per_example,
        on_event=ProgressPrinter(),
        **settings,
    )
    print(json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a DPO LoRA adapter on preference pairs")
    p.add_argument(
        "--data",
        help="training pairs in a TRL preference format: a JSONL or Parquet file, a dataset "
        "folder, or a Hugging Face dataset owner/name[:split] (default split: train)",
    )
    add_model_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --adapter-path from its last checkpoint")
    p.add_argument("--config", help="YAML or TOML file with the same options")
    p.add_argument(
        "--incremental",
        action="store_true",
        help="train one round on the new pairs of --workspace's store, continuing from its latest round",
    )
    p.add_argument("--workspace", help=f"with --incremental: the {WORKSPACE_HELP}")
    add_flag_groups(
        p, settings_of(*TRAIN_GROUPS, RoundSettings, GroupSettings).values()
    )  # --help: one block per settings group
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="preference accuracy and reward margin of a model/adapter on pairs")
    p.add_argument(
        "--data",
        required=True,
        help="pairs: a JSONL or Parquet file, a dataset folder, or a Hugging "
        "Face dataset owner/name[:split] (default split: test)",
    )
    add_model_args(p)
    add_flag_groups(p, _eval_settings().values())
    p.add_argument("--per-example", metavar="OUT.jsonl", help="write per-pair log-probs here")
    p.set_defaults(func=cmd_eval)
