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


# --- `mlx-dpo data import|export|stats`: the preference store of a workspace (mlx_dpo/store.py) ---------------


def cmd_data(args: argparse.Namespace) -> int:
    import json

    from mlx_dpo.pairs import MAX_LISTED_ERRORS, load_pairs
    from mlx_dpo.store import PreferenceStore

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


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="import, export or count the pairs of a workspace's preference store")
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    workspace_help = "workspace folder holding preferences.sqlite (default: ./mlx-dpo-workspace)"

    p = actions.add_parser("import", help="add the pairs of a JSONL file (TRL standard or conversational)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--workspace", help=workspace_help)
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid rows instead of importing nothing")
    p.add_argument("--split", choices=("train", "valid"), default="train", help="split of the new pairs")
    p.set_defaults(func=cmd_data)

    p = actions.add_parser("export", help="write the stored pairs as JSONL")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--workspace", help=workspace_help)
    p.add_argument("--split", choices=("train", "valid"), help="only this split (default: all pairs)")
    p.add_argument("--style", choices=("conversational", "standard"), default="conversational")
    p.set_defaults(func=cmd_data)

    p = actions.add_parser("stats", help="count pairs by split and origin, skips and candidates")
    p.add_argument("--workspace", help=workspace_help)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data)


# --- `mlx-dpo export` and `mlx-dpo push`: a fused model, a PEFT adapter or a GGUF file, and the Hub ------------


def cmd_export(args: argparse.Namespace) -> int:
    if args.dequantize and args.format != "hf":
        print("mlx-dpo: note: --dequantize is for --format hf (gguf is always dequantized, peft has no base weights)",
              file=sys.stderr)
    if args.format == "gguf":
        from mlx_dpo.gguf_export import export_gguf

        result = export_gguf(args.adapter_path, args.out, model=args.model, gguf_type=args.gguf_type,
                             overwrite=args.overwrite)
    elif args.format == "peft":
        from mlx_dpo.export import export_peft

        result = export_peft(args.adapter_path, args.out, model=args.model, overwrite=args.overwrite)
    else:
        from mlx_dpo.export import export_hf

        result = export_hf(args.adapter_path, args.out, model=args.model, dequantize=args.dequantize,
                           overwrite=args.overwrite)
    for note in result.notes:
        print(f"mlx-dpo: note: {note}", file=sys.stderr)
    print(f"exported {result.format} to {result.path}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from mlx_dpo.hub import push_folder

    print(push_folder(args.folder, args.repo, private=args.private, message=args.message))
    return 0


def _add_export_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="fuse an adapter into its base (Hugging Face folder or GGUF), or convert it for PEFT")
    p.add_argument("--adapter-path", required=True, help="the trained adapter folder")
    p.add_argument("--model", help="its base model (default: the one the adapter was trained on)")
    p.add_argument("--out", required=True, help="output folder (for --format gguf: the .gguf file)")
    p.add_argument("--format", choices=("hf", "peft", "gguf"), default="hf",
                   help="hf: fused model folder (default); peft: PEFT LoRA adapter; gguf: fused model for llama.cpp")
    p.add_argument("--dequantize", action="store_true", help="hf: write dense float16 weights (transformers can load them)")
    p.add_argument("--gguf-type", choices=("f16", "q8_0"), default="f16", help="gguf: tensor type (default f16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="upload a folder to a Hugging Face Hub model repo (created if needed)")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)


# Training options: (flag, type, help). Their defaults live in TrainingArgs / LoraSettings; a config
# file (--config, TOML or YAML, same names) sits between those defaults and the flags given.
TRAIN_OPTIONS: list[tuple[str, type | None, str]] = [
    ("--valid-data", str, "validation pairs (JSON Lines)"),
    ("--init-adapter", str, "start from this adapter (it becomes the reference)"),
    ("--iters", int, "optimizer steps (default: --epochs)"),
    ("--epochs", float, "passes over the data (default 1)"),
    ("--batch-size", int, "pairs per micro-batch (default 4)"),
    ("--grad-accum", int, "micro-batches per optimizer step (default 1)"),
    ("--learning-rate", float, "peak learning rate (default 5e-5)"),
    ("--lr-schedule", str, "cosine or constant, after warm-up (default cosine)"),
    ("--warmup-steps", int, "linear warm-up steps (default 0)"),
    ("--weight-decay", float, "AdamW weight decay (default 0)"),
    ("--max-grad-norm", float, "gradient clipping norm (default 1.0; 0 disables)"),
    ("--beta", float, "DPO beta (default 0.1)"),
    ("--loss", str, "sigmoid, robust, hinge, ipo or simpo (default sigmoid)"),
    ("--label-smoothing", float, "conservative/robust DPO epsilon (default 0)"),
    ("--rpo-alpha", float, "weight of the chosen NLL term (RPO; default 0)"),
    ("--simpo-gamma", float, "SimPO target margin (default 0.5)"),
    ("--max-length", int, "max prompt+completion tokens; completions are cut at the end"),
    ("--max-prompt-length", int, "max prompt tokens; prompts keep their end"),
    ("--lora-rank", int, "LoRA rank (default 8)"),
    ("--lora-alpha", float, "LoRA alpha; scale = alpha / rank (default 16)"),
    ("--lora-dropout", float, "LoRA dropout (default 0)"),
    ("--lora-layers", int, "adapt the last N blocks (default all)"),
    ("--lora-keys", str, "comma-separated projections, e.g. self_attn.q_proj,self_attn.v_proj (default all)"),
    ("--dora", None, "DoRA instead of LoRA"),
    ("--grad-checkpoint", None, "recompute activations in the backward pass to save memory"),
    ("--full-logits", None, "project every position onto the vocabulary (slower; for checking)"),
    ("--no-shared-prompt", False, "run each pair as two full sequences instead of sharing the prompt pass"),
    ("--no-compile", False, "do not mx.compile the training step"),
    ("--seed", int, "random seed (default 0)"),
    ("--steps-per-report", int, "steps between metric reports (default 10)"),
    ("--steps-per-eval", int, "steps between validation runs (default 50)"),
    ("--save-every", int, "steps between checkpoints (default 100)"),
    ("--metrics-file", str, "JSON Lines metrics (default: <adapter-path>/metrics.jsonl)"),
    ("--skip-invalid", None, "drop invalid rows instead of refusing to start"),
]
# CLI name -> mlx_dpo.train keyword, where they differ.
_RENAMED = {"loss": "loss_type", "lora_layers": "lora_num_layers", "no_shared_prompt": "shared_prompt",
            "no_compile": "compile"}


def _read_config_file(path: str) -> dict:
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise MlxDpoError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as e:  # tomllib/yaml raise their own error types
        raise MlxDpoError(f"{path}: not valid {'TOML' if p.suffix == '.toml' else 'YAML'} ({e})") from None
    if not isinstance(data, dict):
        raise MlxDpoError(f"{path}: expected a table of options at the top level")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _train_options(args: argparse.Namespace, allowed: set[str]) -> dict:
    """Options from --config, overridden by the flags actually given."""
    options = _read_config_file(args.config) if getattr(args, "config", None) else {}
    unknown = set(options) - allowed
    if unknown:
        raise MlxDpoError(f"{args.config}: unknown option(s): {', '.join(sorted(unknown))}")
    for name in allowed:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            options[name] = value
    for flag in ("no_shared_prompt", "no_compile"):  # switches that turn an optimisation off
        if flag in options:
            options[flag] = not options[flag]
    if isinstance(options.get("lora_keys"), str):
        options["lora_keys"] = [k.strip() for k in options["lora_keys"].split(",") if k.strip()]
    return {_RENAMED.get(k, k): v for k, v in options.items()}


def _check_option_values(options: dict) -> None:
    from mlx_dpo.losses import LOSS_TYPES

    for name in ("iters", "batch_size", "grad_accum", "lora_rank", "steps_per_report", "steps_per_eval", "save_every"):
        if name in options and int(options[name]) < 1:
            raise MlxDpoError(f"--{name.replace('_', '-')} must be at least 1 (got {options[name]})")
    if "loss_type" in options and options["loss_type"] not in LOSS_TYPES:
        raise MlxDpoError(f"--loss {options['loss_type']}: unknown loss (choose from {', '.join(LOSS_TYPES)})")
    if options.get("beta", 1) <= 0:
        raise MlxDpoError("--beta must be positive")
    if not 0 <= options.get("label_smoothing", 0) < 0.5:
        raise MlxDpoError("--label-smoothing must be in [0, 0.5)")
    if options.get("lr_schedule", "cosine") not in ("cosine", "constant"):
        raise MlxDpoError("--lr-schedule must be cosine or constant")


def _default_workspace():
    from mlx_dpo.store import PreferenceStore

    return PreferenceStore.default_workspace()


def cmd_train(args: argparse.Namespace) -> int:
    import json

    import mlx_dpo.api as api
    from mlx_dpo.progress import ProgressPrinter

    allowed = {flag[2:].replace("-", "_") for flag, _, _ in TRAIN_OPTIONS} | {"data", "model", "adapter_path", "resume"}
    if args.incremental:  # one round on the workspace's store (mlx_dpo.rounds)
        from mlx_dpo import rounds

        options = _train_options(args, allowed - {"data", "adapter_path", "resume", "metrics_file"})
        _check_option_values(options)
        if args.replay is not None:
            options["replay"] = args.replay
        model = options.pop("model", None)
        workspace = args.workspace or _default_workspace()
        result = rounds.run_round(workspace, model=model, settings=options, on_event=ProgressPrinter())
        print(json.dumps({"version": result.version, "adapter_path": str(result.adapter_path), "status": result.status,
                          **result.metrics}))
        return 0
    options = _train_options(args, allowed)
    if "data" not in options:
        raise MlxDpoError("--data is required (on the command line or in --config)")
    _check_option_values(options)
    data = options.pop("data")
    result = api.train(data, on_event=ProgressPrinter(), **options)
    print(json.dumps({"adapter_path": str(result.adapter_path), **result.metrics, **result.eval_metrics}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    import mlx_dpo.api as api
    from mlx_dpo.progress import ProgressPrinter

    result = api.evaluate(
        args.data, model=args.model, adapter_path=args.adapter_path, beta=args.beta, loss_type=args.loss,
        batch_size=args.batch_size, max_length=args.max_length, skip_invalid=args.skip_invalid,
        per_example=args.per_example, full_logits=args.full_logits, shared_prompt=not args.no_shared_prompt,
        on_event=ProgressPrinter(),
    )
    print(json.dumps(result, indent=2))
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

    p = sub.add_parser("train", help="train a DPO LoRA adapter on preference pairs")
    p.add_argument("--data", help="training pairs (JSON Lines, TRL standard or conversational format)")
    _add_model_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --adapter-path from its last checkpoint")
    p.add_argument("--config", help="YAML or TOML file with the same options")
    p.add_argument("--incremental", action="store_true",
                   help="train one round on the new pairs of --workspace's store, continuing from its latest round")
    p.add_argument("--workspace", help="with --incremental: the workspace folder (default: ./mlx-dpo-workspace)")
    p.add_argument("--replay", type=float, help="with --incremental: share of older pairs replayed (default 0.5)")
    for flag, kind, help_text in TRAIN_OPTIONS:
        if kind is None or kind is False:
            p.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            p.add_argument(flag, type=kind, help=help_text)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="preference accuracy and reward margin of a model/adapter on pairs")
    p.add_argument("--data", required=True)
    _add_model_args(p)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--loss", default="sigmoid")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int)
    p.add_argument("--skip-invalid", action="store_true")
    p.add_argument("--full-logits", action="store_true", help="project every position onto the vocabulary")
    p.add_argument("--no-shared-prompt", action="store_true", help="run each pair as two full sequences")
    p.add_argument("--per-example", metavar="OUT.jsonl", help="write per-pair log-probs here")
    p.set_defaults(func=cmd_eval)

    _add_data_parser(sub)
    _add_export_parsers(sub)

    p = sub.add_parser("convert", help="resolve --model (convert a GGUF, fetch a repo) and print its folder")
    _add_model_args(p, adapter=False)
    p.set_defaults(func=cmd_convert)
    _add_tui_parser(sub)
    return parser


# --- `mlx-dpo tui` (also plain `mlx-dpo`): the terminal app in the `tui` package ------------------------------


def cmd_tui(args: argparse.Namespace) -> int:
    import os

    from tui.app import MlxDpoApp  # textual is imported only here

    app = MlxDpoApp(args.workspace, model=args.model, adapter_path=args.adapter_path)  # bad workspace: MlxDpoError
    app.run()
    if app.worker.alive:  # quit while the model was still loading: exiting under MLX would abort the process
        sys.stdout.flush()
        os._exit(app.return_code or 0)
    return app.return_code or 0


def _add_tui_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="the terminal app: label sampled answers, write pairs, browse the store (default)")
    p.add_argument("--workspace", help="workspace folder holding preferences.sqlite (default: ./mlx-dpo-workspace)")
    _add_model_args(p)
    p.set_defaults(func=cmd_tui)
    _TUI_OPTIONS.update(o for a in p._actions for o in a.option_strings if o not in ("-h", "--help"))


_TUI_OPTIONS: set[str] = set()  # filled by _add_tui_parser: options that open the app without a command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].split("=")[0] in _TUI_OPTIONS:
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


if __name__ == "__main__":
    sys.exit(main())
