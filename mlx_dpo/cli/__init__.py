"""The `mlx-dpo` command line: one module per group of commands, each registering its own parser.

    models.py  doctor, generate, convert     train.py   train, eval
    data.py    data import|export|stats      export.py  export, push
    app.py     tui (the default command)     online.py  online (sample -> judge -> train rounds)
    common.py  arguments several commands share

Every `MlxDpoError` becomes one line on stderr and exit status 2: bad input never shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import mlx_dpo
from mlx_dpo.cli import app, data, export, models, online, train
from mlx_dpo.errors import MlxDpoError

EXIT_USER_ERROR = 2


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser, and the app's options (which open the app when given without a command)."""
    parser = argparse.ArgumentParser(
        prog="mlx-dpo", description="Align a local LLM to your preferences with DPO on MLX."
    )
    parser.add_argument("--version", action="version", version=f"mlx-dpo {mlx_dpo.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    models.register(sub)
    train.register(sub)
    data.register(sub)
    export.register(sub)
    online.register(sub)
    models.register_convert(sub)
    app_options = app.register(sub)
    return parser, app_options


def main(argv: Sequence[str] | None = None) -> int:
    parser, app_options = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].split("=")[0] in app_options:
        argv = ["tui", *argv]  # `mlx-dpo --workspace X`: the app's options without a command open the app
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:  # no command: open the terminal app
        args = parser.parse_args(["tui"])
        func = args.func
    try:
        return func(args)
    except MlxDpoError as e:
        print(f"mlx-dpo: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("mlx-dpo: interrupted", file=sys.stderr)
        return 130
