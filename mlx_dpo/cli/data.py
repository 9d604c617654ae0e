"""`mlx-dpo data import|export|stats`: the pairs of a workspace's preference store."""

from __future__ import annotations

import argparse
import json
import sys

from mlx_dpo.cli.common import WORKSPACE_HELP
from mlx_dpo.data.pairs import MAX_LISTED_ERRORS, load_pairs
from mlx_dpo.data.store import PreferenceStore


def cmd_data(args: argparse.Namespace) -> int:
    workspace = args.workspace or PreferenceStore.default_workspace()
    if args.action == "import":
        # Read the whole file before touching the workspace: a bad file changes nothing, not even a new folder.
        loaded = load_pairs(args.file, skip_invalid=args.skip_invalid)
        with PreferenceStore(workspace) as store:
            result = store.import_pairs(loaded.pairs, split=args.split)
            path = store.path
        if loaded.skipped:
            print(f"mlx-dpo: {args.file}: skipped {loaded.skipped} invalid row(s):", file=sys.stderr)
            for error in loaded.errors[:MAX_LISTED_ERRORS]:
                print(f"  {error}", file=sys.stderr)
        print(f"imported {result.added} pair(s) into {path} ({result.duplicates} already there)")
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


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="import, export or count the pairs of a workspace's preference store")
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("import", help="add the pairs of a JSONL file (TRL standard or conversational)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid rows instead of importing nothing")
    p.add_argument("--split", choices=("train", "valid"), default="train", help="split of the new pairs")
    p.set_defaults(func=cmd_data)

    p = actions.add_parser("export", help="write the stored pairs as JSONL")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument("--split", choices=("train", "valid"), help="only this split (default: all pairs)")
    p.add_argument("--style", choices=("conversational", "standard"), default="conversational")
    p.set_defaults(func=cmd_data)

    p = actions.add_parser("stats", help="count pairs by split and origin, skips and candidates")
    p.add_argument("--workspace", help=WORKSPACE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data)
