"""The `mlx-dpo` command line: argument parsing and dispatch to the library.

Heavy imports (mlx, mlx-lm, textual) happen inside the commands so `--help` stays fast.
Every `MlxDpoError` becomes one line on stderr and exit status 2: bad input never shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import mlx_dpo  # noqa: F401  # preloads the optimized BLAS before any command imports mlx
from mlx_dpo.errors import MlxDpoError

EXIT_USER_ERROR = 2


def _add_model_args(p: argparse.ArgumentParser, adapter: bool = True) -> None:
    p.add_argument(
        "--model",
        help="Hugging Face repo id, local mlx-lm folder, or GGUF file (default: embedded SmolLM2-135M-Instruct)",
    )
    if adapter:
        p.add_argument("--adapter-path", help="LoRA adapter folder (mlx-lm format) to apply")


def cmd_doctor(args: argparse.Namespace) -> int:
    from mlx_dpo import doctor

    return doctor.main(as_json=args.json, measure=not args.no_measure)


def cmd_generate(args: argparse.Namespace) -> int:
    from mlx_dpo.generate import chat_messages, stream_answer
    from mlx_dpo.models import load_model

    loaded = load_model(args.model, adapter_path=args.adapter_path)
    messages = chat_messages(args.prompt, args.system)
    for piece in stream_answer(
        loaded, messages, max_tokens=args.max_tokens, temp=args.temp, top_p=args.top_p, seed=args.seed
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from mlx_dpo.models import resolve_model_path

    print(resolve_model_path(args.model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-dpo", description="Align a local LLM to your preferences with DPO on MLX."
    )
    parser.add_argument("--version", action="version", version=f"mlx-dpo {mlx_dpo.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="show device, BLAS, matmul rate, memory and the default model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-measure", action="store_true", help="skip the matmul measurements")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("generate", help="answer one prompt with the model (chat template applied)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--system", help="system message")
    _add_model_args(p)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temp", type=float, default=0.7, help="sampling temperature; 0 is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("convert", help="resolve --model (convert a GGUF, fetch a repo) and print its folder")
    _add_model_args(p, adapter=False)
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except MlxDpoError as e:
        print(f"mlx-dpo: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("mlx-dpo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
