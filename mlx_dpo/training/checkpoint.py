"""Checkpoints: the adapter plus everything `--resume` needs to continue exactly where it stopped.

    <adapter_dir>/adapter_config.json, adapters.safetensors    latest adapter (mlx-lm format)
    <adapter_dir>/checkpoints/step-000050/                     adapter, optimizer.safetensors, trainer_state.json
Each checkpoint folder appears whole or not at all (written beside, then renamed).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from mlx_dpo.atomic import atomic_directory, write_json
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.adapter import ADAPTER_FILE, CONFIG_FILE, adapter_weights, save_adapter, save_arrays

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def save(adapter_dir: Path, step: int, model: nn.Module, optimizer: optim.Optimizer, config: dict, state: dict) -> Path:
    """Write checkpoint `step`, then update the adapter at the top of `adapter_dir`."""
    path = adapter_dir / "checkpoints" / f"step-{step:06d}"
    with atomic_directory(path, overwrite=True) as tmp:
        save_arrays(tmp / ADAPTER_FILE, adapter_weights(model))
        write_json(tmp / CONFIG_FILE, config)
        save_arrays(tmp / OPTIMIZER_FILE, dict(tree_flatten(optimizer.state)))
        write_json(tmp / STATE_FILE, {"step": step, **state})
    save_adapter(adapter_dir, model, config)
    return path


def latest(adapter_dir: Path) -> Path | None:
    """The newest complete checkpoint under `adapter_dir`, if any."""
    found = sorted((adapter_dir / "checkpoints").glob("step-*"))
    complete = [p for p in found if (p / STATE_FILE).is_file() and (p / OPTIMIZER_FILE).is_file()]
    return complete[-1] if complete else None


def read_state(path: Path) -> dict:
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{path / STATE_FILE}: unreadable checkpoint state ({e})") from None


def restore(path: Path, model: nn.Module, optimizer: optim.Optimizer) -> int:
    """Load adapter weights and optimizer state from checkpoint `path`; returns its step."""
    state = read_state(path)
    weights = mx.load(str(path / ADAPTER_FILE))
    model.load_weights(list(weights.items()), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(path / OPTIMIZER_FILE)).items()))
    mx.eval(model.parameters(), optimizer.state)
    return int(state["step"])


def restore_moments(path: Path, optimizer: optim.Optimizer) -> None:
    """Carry a finished run's optimizer moments into a new run that continues from its adapter.

    The step count and learning-rate schedule start afresh; only the per-parameter state moves over.
    """
    saved = {k: v for k, v in mx.load(str(path / OPTIMIZER_FILE)).items() if k not in ("step", "learning_rate")}
    state = dict(optimizer.state)
    state.update(tree_unflatten(list(saved.items())))
    optimizer.state = state
