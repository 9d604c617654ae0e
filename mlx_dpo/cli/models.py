"""`mlx-dpo doctor`, `generate` and `convert`: the machine, one answer, and where a model lives."""

from __future__ import annotations

import argparse
import sys

from mlx_dpo.cli.common import add_model_args, add_template_flag, checked, checked_template
from mlx_dpo.options import add_deprecated_flag, add_flag_groups, build, given_flags, settings_of
from mlx_dpo.settings import SampleSettings


def cmd_doctor(args: argparse.Namespace) -> int:
    from mlx_dpo import doctor  # the heavy library loads when a command runs (see cli/__init__)

    return doctor.main(as_json=args.json, measure=not args.no_measure, model=args.model)


def cmd_generate(args: argparse.Namespace) -> int:
    from mlx_dpo.models.generate import chat_messages, stream_answer, template_note
    from mlx_dpo.models.load import load_model

    table = settings_of(SampleSettings)
    settings = build(SampleSettings, checked(given_flags(args, table.values()), table))  # checked before loading
    template = checked_template(args)
    loaded = load_model(args.model, adapter_path=args.adapter_path, chat_template=template)
    note = template_note(loaded)
    if note:
        print(f"note: {note}", file=sys.stderr)
    messages = chat_messages(args.prompt, args.system)
    for piece in stream_answer(
        loaded,
        messages,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from mlx_dpo.models.load import resolve_model_path

    print(resolve_model_path(args.model))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="show device, BLAS, matmul rate, memory and the default model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-measure", action="store_true", help="skip the matmul measurements")
    p.add_argument("--model", help="also load this model and report which log-prob path it gets (self-check)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("generate", help="answer one prompt with the model (its chat template applied, if it has one)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--system", help="system message")
    add_model_args(p)
    add_template_flag(p)
    add_flag_groups(p, settings_of(SampleSettings).values())
    # Its flags before they were the sampler settings' own (one name each, as `online` and the app name them).
    add_deprecated_flag(p, "--temp", settings_of(SampleSettings)["temperature"])
    add_deprecated_flag(p, "--seed", settings_of(SampleSettings)["sample_seed"])
    p.set_defaults(func=cmd_generate)


def register_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="resolve --model (convert a GGUF, fetch a repo) and print its folder")
    add_model_args(p, adapter=False)
    p.set_defaults(func=cmd_convert)
