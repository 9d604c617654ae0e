"""Arguments that several commands share, with one help text each."""

from __future__ import annotations

import argparse

WORKSPACE_HELP = "workspace folder holding preferences.sqlite (default: ./mlx-dpo-workspace)"


def add_model_args(p: argparse.ArgumentParser, adapter: bool = True) -> None:
    p.add_argument(
        "--model",
        help="Hugging Face repo id, local mlx-lm folder, or GGUF file (default: embedded SmolLM2-135M-Instruct)",
    )
    if adapter:
        p.add_argument("--adapter-path", help="LoRA adapter folder (mlx-lm format) to apply")
