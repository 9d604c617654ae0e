"""Where mlx-dpo keeps its own files: converted models and the reference log-prob cache."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """`$MLX_DPO_HOME`, default `~/.cache/mlx-dpo`."""
    return Path(os.environ.get("MLX_DPO_HOME") or Path.home() / ".cache" / "mlx-dpo").expanduser()


def models_dir() -> Path:
    return home() / "models"


def ref_cache_dir() -> Path:
    return home() / "ref-cache"
