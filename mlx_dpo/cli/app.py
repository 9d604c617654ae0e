"""`mlx-dpo tui` (also plain `mlx-dpo`, or the app's options alone): the terminal app in the `tui` package."""

from __future__ import annotations

import argparse
import os
import sys

from mlx_dpo.cli.common import WORKSPACE_HELP, add_model_args, add_template_flag, checked_template


def cmd_tui(args: argparse.Namespace) -> int:
    # Textual is an optional heavy dependency of the CLI: only this command imports it, and the
    # library itself never does (tui depends on mlx_dpo, not the other way round).
    from tui.app import MlxDpoApp

    template = checked_template(args)
    app = MlxDpoApp(
        args.workspace,
        model=args.model,
        adapter_path=args.adapter_path,
        prompts=args.prompts,
        judge=args.judge,
        rubric=args.rubric,  # a bad workspace or prompt file: MlxDpoError
        train_settings={"chat_template": template} if template else None,
    )
    app.run()
    return leave_app(app)


def leave_app(app) -> int:
    """End the process after the app has run, without C++ static destructors, once its model worker has run. That
    thread made its own MLX stream (streams are thread-local), and destroying it at exit can abort the process
    ("terminate called without an active exception", exit -6 after ctrl+q) whether a load is still running or not.
    Every label the app reported saved is committed, and Textual has restored the terminal. Returns the exit code
    where no worker ever started."""
    if app.worker.started:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(app.return_code or 0)
    return app.return_code or 0


def register(sub: argparse._SubParsersAction) -> set[str]:
    """Add `tui`; returns its option strings, which open the app when given without a command."""
    p = sub.add_parser("tui", help="the terminal app: label sampled answers, write pairs, browse the store (default)")
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    add_model_args(p)
    p.add_argument(
        "--prompts",
        metavar="FILE",
        help="prompts to label, one per line (or JSONL with 'prompt'): the Label screen's queue, from the "
        "first prompt with no label yet",
    )
    p.add_argument(
        "--judge",
        metavar="SPEC",
        help="a program judge (file.py:NAME, module:NAME or llm:MODEL) whose choice the Label screen shows "
        "as a suggestion, accepted with a",
    )
    p.add_argument("--rubric", metavar="TEXT|FILE", help="what an llm:MODEL judge is asked to prefer")
    add_template_flag(p)
    p.set_defaults(func=cmd_tui)
    return {o for a in p._actions for o in a.option_strings if o not in ("-h", "--help")}
