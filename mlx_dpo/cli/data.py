"""`mlx-dpo data import|export|stats|review`: the pairs of a workspace's preference store."""

from __future__ import annotations

import argparse
import json
import sys

from mlx_dpo.cli.common import WORKSPACE_HELP
from mlx_dpo.data.feedback import load_feedback
from mlx_dpo.data.pairs import UnpairedRows, load_pairs
from mlx_dpo.data.rows import MAX_LISTED_ERRORS
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.options import add_flags, settings_of
from mlx_dpo.progress import ProgressPrinter
from mlx_dpo.settings import RunOptions


def cmd_data(args: argparse.Namespace) -> int:
    workspace = args.workspace or PreferenceStore.default_workspace()
    if args.action == "review":
        return cmd_review(args, workspace)
    if args.action == "import":
        # Read the whole file before touching the workspace: a bad file changes nothing, not even a new folder.
        # A Hub dataset without ":split" gives its train split, or for --split valid its test split.
        split = "test" if args.split == "valid" else "train"
        try:
            loaded = load_pairs(args.file, skip_invalid=args.skip_invalid, config=args.data_config, default_split=split)
        except UnpairedRows:
            return import_feedback(args, workspace, split)
        warning = long_rows_warning(loaded.pairs, args.model)
        with PreferenceStore(workspace) as store:
            result = store.import_pairs(loaded.pairs, split=args.split)
            path = store.path
        if loaded.skipped:
            print(f"mlx-dpo: {args.file}: skipped {loaded.skipped} invalid row(s):", file=sys.stderr)
            for error in loaded.errors[:MAX_LISTED_ERRORS]:
                print(f"  {error}", file=sys.stderr)
        if warning:
            print(f"mlx-dpo: warning: {warning}", file=sys.stderr)
        threads = f"; {result.linked} continue an earlier turn of a conversation" if result.linked else ""
        print(f"imported {result.added} pair(s) into {path} ({result.duplicates} already there){threads}")
        return 0
    with PreferenceStore(workspace, create=False) as store:
        if args.action == "export":
            count = store.export_jsonl(args.file, split=args.split, style=args.style)
            print(f"exported {count} pair(s) to {args.file}")
            return 0
        stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"store:      {stats['path']} (schema version {stats['schema_version']})")
        print(f"pairs:      {stats['pairs']} ({', '.join(f'{k} {v}' for k, v in stats['by_split'].items())})")
        print(f"origins:    {', '.join(f'{k} {v}' for k, v in stats['by_origin'].items())}")
        print(f"skips:      {stats['skips']}")
        print(f"candidates: {stats['candidates']}")
    return 0


def import_feedback(args: argparse.Namespace, workspace, split: str) -> int:
    """`data import` of TRL's unpaired rows (prompt, completion, label): the store's answers marked good or bad,
    which a KTO round trains on, as the app's g/b marks are."""
    if args.split == "valid":
        raise MlxDpoError(
            f"{args.file}: unpaired rows (prompt, completion, label) have no validation split in the "
            "store; import them without --split valid"
        )
    examples, skipped = load_feedback(
        args.file, skip_invalid=args.skip_invalid, config=args.data_config, default_split=split
    )
    with PreferenceStore(workspace) as store:
        result = store.import_feedback(examples, source=str(args.file))
        path = store.path
    if skipped:
        print(f"mlx-dpo: {args.file}: skipped {skipped} invalid row(s)", file=sys.stderr)
    print(
        f"imported {result.added} answer(s) marked good or bad into {path} ({result.duplicates} already there); "
        "a round with --loss kto trains them"
    )
    return 0


def long_rows_warning(pairs: list, model: str | None) -> str | None:
    """The rows `train` would cut or refuse under its default limits, for `--model` (default: the default
    model), or None. Only a file with a row that may be too long by a byte count loads the tokenizer
    (training.tokens.may_exceed), so importing short pairs stays instant."""
    from mlx_dpo.models.load import load_tokenizer_only
    from mlx_dpo.training.tokens import may_exceed, rows_over_limits, token_limits

    defaults = token_limits({}, RunOptions.max_length, RunOptions.max_prompt_length)
    if not any(may_exceed(p, defaults) for p in pairs):
        return None
    tokenizer, config = load_tokenizer_only(model)
    limits = token_limits(config, RunOptions.max_length, RunOptions.max_prompt_length)
    over = rows_over_limits(pairs, tokenizer, limits)
    if not over:
        return None
    shown = ", ".join(f"{p.source} ({n:,} tokens)" for p, n in over[:10]) + (
        f" and {len(over) - 10} more" if len(over) > 10 else ""
    )
    return (
        f"{len(over)} row(s) are longer than the model takes whole in training (--max-length "
        f"{limits.max_length}, --max-prompt-length {limits.max_prompt_length}): {shown}; `train` cuts them "
        "(prompts keep their end, answers their start) and names them"
    )


def cmd_review(args: argparse.Namespace, workspace) -> int:
    """`data review`: the pairs the trained adapter disagrees with most, and the labels that contradict each other."""
    from mlx_dpo.training.review import review_pairs  # heavy (MLX): only this action needs it

    if args.limit < 0:
        raise MlxDpoError(f"--limit {args.limit}: give 0 (all pairs) or more")
    report = review_pairs(
        workspace, adapter_path=args.adapter_path, model=args.model, split=args.split, on_event=ProgressPrinter()
    )
    items = report.items[: args.limit] if args.limit else report.items
    if args.json:
        print(
            json.dumps(
                {
                    "adapter_path": str(report.adapter_path) if report.adapter_path else None,
                    "version": report.version,
                    "beta": report.beta,
                    "pairs": len(report.items),
                    "items": [vars(i) for i in items],
                    "contradictions": [
                        {"kind": c.kind, "pair_ids": list(c.pair_ids), "answers": list(c.answers)}
                        for c in report.contradictions
                    ],
                    "skipped": [{"pair_id": i, "reason": why} for i, why in report.skipped],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if report.adapter_path is None:
        print(
            "no finished round to review with yet: train a round (or give --adapter-path); "
            "only contradictions were checked",
            file=sys.stderr,
        )
    else:
        print(
            f"{len(report.items)} pair(s) under {report.version or report.adapter_path} (beta {report.beta:g}), "
            "most disagreement first; a negative margin means the model prefers the rejected answer"
        )
        with PreferenceStore(workspace, create=False) as store:
            prompts = {i.pair_id: store.get_pair(i.pair_id).prompt[-1]["content"] for i in items}
        print(f"{'pair':>6} {'margin':>9} {'chosen':>9} {'rejected':>9}  prompt")
        for i in items:
            print(
                f"{i.pair_id:>6} {i.margin:>9.4f} {i.chosen_reward:>9.4f} {i.rejected_reward:>9.4f}  "
                f"{_one_line(prompts[i.pair_id])}"
            )
        if len(items) < len(report.items):
            print(f"... and {len(report.items) - len(items)} more (--limit)")
    for pair_id, why in report.skipped:
        print(f"mlx-dpo: pair {pair_id} not scored: {why}", file=sys.stderr)
    print(f"{len(report.contradictions)} contradiction(s)")
    for c in report.contradictions:
        print(
            f"  {c.kind}: pairs {', '.join(map(str, c.pair_ids))} judge "
            f"{' / '.join(repr(_one_line(a, 30)) for a in c.answers)} both ways"
        )
    return 0


def _one_line(text: str, width: int = 50) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="import, export, count or review the pairs of a workspace's preference store")
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser(
        "import",
        help="add the pairs (or KTO's answers marked good or bad) of a file, folder or "
        "Hub dataset, in any TRL preference format",
    )
    p.add_argument(
        "file",
        metavar="DATA",
        help="a JSONL or Parquet file, a dataset folder, or a Hugging Face dataset "
        "owner/name[:split] (default split: train; with --split valid: test)",
    )
    add_flags(p, [settings_of(RunOptions)["data_config"]])
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid rows instead of importing nothing")
    p.add_argument("--split", choices=("train", "valid"), default="train", help="split of the new pairs")
    p.add_argument(
        "--model",
        help="warn about rows longer than this model takes whole (default: the default "
        "model); its tokenizer loads only when a row may be too long",
    )
    p.set_defaults(func=cmd_data)

    p = actions.add_parser("export", help="write the stored pairs as JSONL")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument("--split", choices=("train", "valid"), help="only this split (default: all pairs)")
    p.add_argument("--style", choices=("conversational", "standard"), default="conversational")
    p.set_defaults(func=cmd_data)

    p = actions.add_parser(
        "review",
        help="list the pairs a trained adapter disagrees with most (likely "
        "mislabels) and labels that contradict each other",
    )
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument("--adapter-path", help="adapter to review with (default: the latest finished round's)")
    p.add_argument("--model", help="its base model (default: the one the round trained on)")
    p.add_argument("--split", choices=("train", "valid"), help="only this split (default: all pairs)")
    p.add_argument("--limit", type=int, default=20, help="show this many pairs (0: all; default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data)

    p = actions.add_parser("stats", help="count pairs by split and origin, skips and candidates")
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data)
