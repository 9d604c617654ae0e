"""`mlx-dpo export` and `mlx-dpo push`: a fused model, a PEFT adapter or a GGUF file, and the Hub."""

from __future__ import annotations

import argparse
import sys

from mlx_dpo.settings import EXPORT_FORMATS, GGUF_TYPES


def cmd_export(args: argparse.Namespace) -> int:
    from mlx_dpo.export import export  # the heavy library loads when a command runs (see cli/__init__)

    if args.dequantize and args.format != "hf":
        print(
            "mlx-dpo: note: --dequantize is for --format hf (gguf is always dequantized, peft has no base weights)",
            file=sys.stderr,
        )
    result = export(
        args.adapter_path,
        args.out,
        format=args.format,
        model=args.model,
        dequantize=args.dequantize,
        gguf_type=args.gguf_type,
        overwrite=args.overwrite,
    )
    for note in result.notes:
        print(f"mlx-dpo: note: {note}", file=sys.stderr)
    print(f"exported {result.format} to {result.path}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from mlx_dpo.export.push import push_folder

    print(push_folder(args.folder, args.repo, private=args.private, message=args.message))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="fuse an adapter into its base (Hugging Face folder or GGUF), or convert it for PEFT"
    )
    p.add_argument("--adapter-path", required=True, help="the trained adapter folder")
    p.add_argument("--model", help="its base model (default: the one the adapter was trained on)")
    p.add_argument("--out", required=True, help="output folder (for --format gguf: the .gguf file)")
    p.add_argument(
        "--format",
        choices=tuple(EXPORT_FORMATS),
        default="hf",
        help="; ".join(f"{k}: {v}" for k, v in EXPORT_FORMATS.items()) + " (default hf)",
    )
    p.add_argument(
        "--dequantize",
        action="store_true",
        help="hf: dense weights transformers can load (the dtype the base declares, else float16)",
    )
    p.add_argument("--gguf-type", choices=GGUF_TYPES, default="f16", help="gguf: tensor type (default f16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="upload a folder to a Hugging Face Hub model repo (created if needed)")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)
