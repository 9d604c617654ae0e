"""`mlx-dpo online`: rounds of sample -> judge -> train on a prompt file (mlx_dpo.online.loop), or, with
`--judge human`, the app with the prompt file as its Label queue (a person judges; rounds run in the app).

Settings come from their dataclasses (OnlineSettings, RoundSettings and the training groups), read and
checked the way `mlx-dpo train` reads them, so every flag has one name, one default and one rule. The
sampler's flags are the app's sampler settings (mlx_dpo.models.generate.SampleSettings).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
import os
import sys
from pathlib import Path

from mlx_dpo import api  # light: its heavy names (run_online, ...) load the library when the command runs
from mlx_dpo.cli.common import WORKSPACE_HELP, add_model_args
from mlx_dpo.cli.train import _checked, _train_settings
from mlx_dpo.data.prompt_file import read_prompt_file
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.options import add_flags, given_flags, settings_of
from mlx_dpo.progress import ProgressPrinter
from mlx_dpo.settings import ONLINE_SAMPLING, OnlineSettings, RoundSettings, SampleSettings, TRAIN_GROUPS


def _sample_settings(args: argparse.Namespace) -> SampleSettings:
    """The sampler settings: online's defaults (ONLINE_SAMPLING), with the sampler flags given."""
    given = {k: getattr(args, a) for k, a in (("temperature", "temperature"), ("top_p", "top_p"),
                                              ("max_tokens", "max_tokens"), ("seed", "sample_seed"))
             if getattr(args, a) is not None}
    sample = replace(ONLINE_SAMPLING, **given)
    try:
        sample.check()
    except ValueError as e:
        raise MlxDpoError(f"sampler: {e}") from None
    return sample


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

    online_given = _checked(given_flags(args, settings_of(OnlineSettings).values()), settings_of(OnlineSettings))
    online = OnlineSettings(**online_given)
    round_settings = _checked(given_flags(args, _train_settings(incremental=True).values()),
                              _train_settings(incremental=True))
    sample = _sample_settings(args)
    workspace = args.workspace or PreferenceStore.default_workspace()
    read_prompt_file(args.prompts)  # a bad file: one line, before anything loads
    eval_prompts = read_prompt_file(args.eval_prompts) if args.eval_prompts else None
    if args.judge == "human":
        return _open_app(args, workspace, online, round_settings, sample)
    printer = ProgressPrinter()

    def on_round(report) -> None:
        if args.json:
            print(json.dumps(report.to_json()), flush=True)
        else:
            print(describe_round(report), flush=True)

    api.run_online(workspace, args.prompts, args.judge, rubric=_rubric(args.rubric), model=args.model,
                   online=online, eval_prompts=eval_prompts, sample_settings=sample, settings=round_settings,
                   on_event=printer, on_round=on_round)
    return 0


def _open_app(args, workspace, online: OnlineSettings, round_settings: dict, sample: SampleSettings) -> int:
    """`--judge human`: the app on the same workspace, the prompt file as its queue, a round every K labels."""
    from tui.app import MlxDpoApp  # Textual only for this path (the library never imports it)

    app = MlxDpoApp(workspace, model=args.model, settings=sample, prompts=args.prompts, per_round=online.per_round,
                    train_settings=round_settings)
    app.run()
    if app.worker.alive:  # as cmd_tui: exiting under MLX while the model loads would abort the process
        sys.stdout.flush()
        os._exit(app.return_code or 0)
    return app.return_code or 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("online", help="online rounds: sample answers, let a judge (program or person) choose, train")
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument("--prompts", required=True, metavar="FILE",
                   help="prompts, one per line (or JSONL with 'prompt'): the app's prompt-queue formats")
    p.add_argument("--judge", required=True, metavar="SPEC",
                   help="file.py:NAME or module:NAME (a score or prefer function), llm:MODEL, or human (the app)")
    p.add_argument("--rubric", metavar="TEXT|FILE", help="with --judge llm:MODEL: what makes an answer better")
    p.add_argument("--eval-prompts", metavar="FILE", help="held-out prompts measured after each round (and the base)")
    p.add_argument("--json", action="store_true", help="print one JSON line per round")
    add_model_args(p, adapter=False)
    sampler = p.add_argument_group("sampler (the app's sampler settings, with online's own defaults)")
    app = ONLINE_SAMPLING
    sampler.add_argument("--temperature", type=float, help=f"sampling temperature (default {app.temperature:g})")
    sampler.add_argument("--top-p", type=float, help=f"nucleus top-p (default {app.top_p:g})")
    sampler.add_argument("--max-tokens", type=int, help=f"longest answer in tokens (default {app.max_tokens})")
    sampler.add_argument("--sample-seed", type=int, help="sampler seed, combined with the round number (default 0)")
    add_flags(p, settings_of(OnlineSettings).values())
    add_flags(p.add_argument_group("rounds"), settings_of(RoundSettings).values())
    add_flags(p.add_argument_group("training"),
              [s for n, s in _train_settings(incremental=True).items() if n in settings_of(*TRAIN_GROUPS)])
    p.set_defaults(func=cmd_online)
