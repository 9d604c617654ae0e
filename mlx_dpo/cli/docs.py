"""docs/commands.md, written from the command line's own parser, so the reference cannot drift from the flags.

    python -m mlx_dpo.cli.docs            # print it
    python -m mlx_dpo.cli.docs --write    # rewrite docs/commands.md (tests/test_docs.py fails when it is stale)

Every command and subcommand, each option in the parser's own groups, with its help text as `--help` prints it
(the settings' help and defaults come from mlx_dpo/settings.py through mlx_dpo/options.py). It reads argparse's
parser objects (`_actions`, `_action_groups`, `_choices_actions`): attributes argparse has kept since Python 3.2
but does not document, and the only way to list a parser's options other than parsing its help text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from mlx_dpo.cli import build_parser

DOCS_FILE = Path(__file__).resolve().parents[2] / "docs" / "commands.md"
HEADER = """# Commands and options

Generated from the command line's parser by `python -m mlx_dpo.cli.docs --write`; do not edit by hand
(`tests/test_docs.py` fails when this file and the parser differ). Each setting is also a key of a `--config`
file and a keyword of `mlx_dpo.api` (underscores for dashes); `mlx_dpo/settings.py` declares them.
"""


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand of `parser`, in the order `--help` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _help(action: argparse.Action, prog: str) -> str:
    """The help text as argparse prints it (its %(default)s and %% expanded), on one line; the default added
    where the text does not give it (options outside the settings, whose help the settings write)."""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    text = " ".join((action.help % params).split()) if action.help else ""
    if action.choices is not None and action.option_strings and not all(str(c) in text for c in action.choices):
        text = f"{text}; one of {', '.join(map(str, action.choices))}".lstrip("; ")
    if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings and "default" not in text:
        text = f"{text} (default {action.default})".lstrip()
    return text


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest.upper()
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    return ", ".join(f"{flag} {metavar}" for flag in action.option_strings)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """One table per argument group (the parser's own titles), leaving out --help and the subcommands."""
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help is not argparse.SUPPRESS
        ]
        if not actions:
            continue
        lines += ["", f"*{group.title}*", "", "| option | what it does |", "|---|---|"]
        lines += [f"| `{_cell(_invocation(a))}` | {_cell(_help(a, parser.prog))} |" for a in actions]
    return lines


def _command(name: str, summary: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = ["", f"{'#' * level} `{name}`", ""]
    if summary:
        lines.append(summary[0].upper() + summary[1:] + ".")
    lines += _options(parser)
    subs = list(_subcommands(parser))
    for sub_name, sub_summary, sub in subs:
        lines += _command(f"{name} {sub_name}", sub_summary, sub, level + 1)
    return lines


def commands_markdown() -> str:
    parser, _app_options = build_parser()
    lines = [HEADER.rstrip("\n"), "", "| command | what it does |", "|---|---|"]
    commands = list(_subcommands(parser))
    lines += [f"| [`mlx-dpo {name}`](#mlx-dpo-{name}) | {_cell(summary)} |" for name, summary, _ in commands]
    lines += _options(parser)
    for name, summary, sub in commands:
        lines += _command(f"mlx-dpo {name}", summary, sub, 2)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="python -m mlx_dpo.cli.docs", description=__doc__.splitlines()[0])
    args.add_argument("--write", action="store_true", help=f"rewrite {DOCS_FILE.name} instead of printing it")
    if args.parse_args(argv).write:
        DOCS_FILE.write_text(commands_markdown(), encoding="utf-8")
    else:
        sys.stdout.write(commands_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
