"""`mlx-dpo online`: rounds of sample -> judge -> train on a prompt file (mlx_dpo.online.loop), or, with
`--judge human`, the app with the prompt file as its Label queue (a person judges; rounds run in the app).

Settings come from their dataclasses (OnlineSettings, SampleSettings, RoundSettings and the training groups),
read and checked the way `mlx-dpo train` reads them, so every flag has one name, one default and one rule; the
sampler's defaults are online's own (ONLINE_SAMPLING), and --help shows them, group by group.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from mlx_dpo import api  # light: its heavy names (run_online, ...) load the library when the command runs
from mlx_dpo.cli.app import leave_app
from mlx_dpo.cli.common import WORKSPACE_HELP, add_model_args, checked, train_settings
from mlx_dpo.data.prompt_file import read_prompt_file
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.options import add_flag_groups, build, given_flags, settings_of
from mlx_dpo.progress import ProgressPrinter
from mlx_dpo.settings import ONLINE_SAMPLING, OnlineSettings, SampleSettings, online_sampling_table


def _sample_settings(args: argparse.Namespace) -> SampleSettings:
    """The sampler settings: online's defaults (ONLINE_SAMPLING), with the sampler flags given, checked."""
    table = online_sampling_table()
    return build(SampleSettings, checked(given_flags(args, table.values()), table), base=asdict(ONLINE_SAMPLING))


def _rubric(text: str | None) -> str | None:
    """--rubric TEXT or FILE: a file's content when the name is an existing file."""
    if text is None:
        return None
    path = Path(text).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MlxDpoError(f"{path}: cannot read the rubric ({e})") from None
    return text


def cmd_online(args: argparse.Namespace) -> int:
    from mlx_dpo.online.loop import describe_round  # the heavy library loads when the command runs

    online = build(
        OnlineSettings, checked(given_flags(args, settings_of(OnlineSettings).values()), settings_of(OnlineSettings))
    )
    rounds = train_settings(incremental=True)
    round_settings = checked(given_flags(args, rounds.values()), rounds)
    sample = _sample_settings(args)
    workspace = args.workspace or PreferenceStore.default_workspace()
    read_prompt_file(args.prompts)  # a bad file: one line, before anything loads
    eval_prompts = read_prompt_file(args.eval_prompts) if args.eval_prompts else None
    if args.judge == "human":
        if online.turns > 1:
            raise MlxDpoError(
                "--turns is for a program judge; a person continues a conversation in the app (c after a pick)"
            )
        return _open_app(args, workspace, online, round_settings, sample)
    printer = ProgressPrinter()

    def on_round(report) -> None:
        if args.json:
            print(json.dumps(report.to_json()), flush=True)
        else:
            print(describe_round(report), flush=True)

    api.run_online(
        workspace,
        args.prompts,
        args.judge,
        rubric=_rubric(args.rubric),
        model=args.model,
        online=online,
        eval_prompts=eval_prompts,
        sample_settings=sample,
        settings=round_settings,
        on_event=printer,
        on_round=on_round,
    )
    return 0


def _open_app(args, workspace, online: OnlineSettings, round_settings: dict, sample: SampleSettings) -> int:
    """`--judge human`: the app on the same workspace, the prompt file as its queue, a round every K labels."""
    from tui.app import MlxDpoApp  # Textual only for this path (the library never imports it)

    app = MlxDpoApp(
        workspace,
        model=args.model,
        settings=sample,
        prompts=args.prompts,
        per_round=online.per_round,
        train_settings=round_settings,
    )
    app.run()
    return leave_app(app)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("online", help="online rounds: sample answers, let a judge (program or person) choose, train")
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument(
        "--prompts",
        required=True,
        metavar="FILE",
        help="prompts, one per line (or JSONL with 'prompt'): the app's prompt-queue formats",
    )
    p.add_argument(
        "--judge",
        required=True,
        metavar="SPEC",
        help="file.py:NAME or module:NAME (a score or prefer function), llm:MODEL, or human (the app)",
    )
    p.add_argument("--rubric", metavar="TEXT|FILE", help="with --judge llm:MODEL: what makes an answer better")
    p.add_argument("--eval-prompts", metavar="FILE", help="held-out prompts measured after each round (and the base)")
    p.add_argument("--json", action="store_true", help="print one JSON line per round")
    add_model_args(p, adapter=False)
    # --help: one block per settings group, each flag with the default online uses (a round's, online's sampler's).
    add_flag_groups(
        p,
        [
            *settings_of(OnlineSettings).values(),
            *online_sampling_table().values(),
            *train_settings(incremental=True).values(),
        ],
    )
    p.set_defaults(func=cmd_online)
