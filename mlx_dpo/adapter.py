"""The policy's LoRA/DoRA adapter: put it on a model, save it in mlx-lm's format, load it back.

An adapter folder holds `adapter_config.json` + `adapters.safetensors`, exactly what
`mlx_lm.load(model, adapter_path=...)` reads. Only the adapter's parameters train.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_dpo.atomic import save_arrays, write_json
from mlx_dpo.errors import MlxDpoError

ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank, as in PEFT
    dropout: float = 0.0
    num_layers: int = -1  # adapt the last N transformer blocks; -1: all of them
    keys: list[str] | None = None  # e.g. ["self_attn.q_proj", "self_attn.v_proj"]; None: every linear layer
    dora: bool = False

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def add_adapter(model: nn.Module, settings: LoraSettings) -> None:
    """Freeze the base model and wrap its linear layers in fresh LoRA (or DoRA) layers.

    LoRA's B starts at zero (DoRA's magnitude at the base norm), so the adapted model starts equal to the base.
    """
    from mlx_lm.tuner.utils import linear_to_lora_layers

    num_blocks = len(model.layers)
    if settings.num_layers > num_blocks:
        raise MlxDpoError(f"--lora-layers {settings.num_layers}: the model has only {num_blocks} layers")
    model.freeze()
    config = {"rank": settings.rank, "scale": settings.scale, "dropout": settings.dropout}
    if settings.keys:
        config["keys"] = list(settings.keys)
    linear_to_lora_layers(model, _num_layers(settings, num_blocks), config, use_dora=settings.dora)


def _num_layers(settings: LoraSettings, num_blocks: int) -> int:
    return num_blocks if settings.num_layers < 0 else settings.num_layers


def adapter_config(settings: LoraSettings, model: nn.Module, base_model: str, extra: dict | None = None) -> dict:
    """mlx-lm's adapter_config.json, plus an `mlx_dpo` section with what trained it."""
    lora = {"rank": settings.rank, "scale": settings.scale, "dropout": settings.dropout}
    if settings.keys:
        lora["keys"] = list(settings.keys)
    return {
        "fine_tune_type": "dora" if settings.dora else "lora",
        "num_layers": _num_layers(settings, len(model.layers)),
        "lora_parameters": lora,
        "base_model": base_model,
        "mlx_dpo": {"lora": asdict(settings), **(extra or {})},
    }


def adapter_weights(model: nn.Module) -> dict[str, mx.array]:
    """The trainable (adapter) parameters by their module path."""
    return dict(tree_flatten(model.trainable_parameters()))


def save_adapter(folder: Path, model: nn.Module, config: dict) -> None:
    """Write the adapter atomically: weights first, then the config that makes the folder loadable."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = adapter_weights(model)
    save_arrays(folder / ADAPTER_FILE, weights)
    write_json(folder / CONFIG_FILE, config)


def read_adapter_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlxDpoError(f"{folder}: not an adapter folder (no {CONFIG_FILE})") from None
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{folder / CONFIG_FILE}: unreadable ({e})") from None


def settings_from_config(config: dict) -> LoraSettings:
    saved = config.get("mlx_dpo", {}).get("lora")
    if saved:
        return LoraSettings(**saved)
    lora = config.get("lora_parameters", {})
    rank = int(lora.get("rank", 8))
    return LoraSettings(
        rank=rank,
        alpha=float(lora.get("scale", 20.0)) * rank,
        dropout=float(lora.get("dropout", 0.0)),
        num_layers=int(config.get("num_layers", -1)),
        keys=lora.get("keys"),
        dora=config.get("fine_tune_type") == "dora",
    )


def load_adapter(model: nn.Module, folder: Path) -> LoraSettings:
    """Add the adapter layers described by `folder` to a frozen model and load its weights."""
    config = read_adapter_config(folder)
    if not (folder / ADAPTER_FILE).is_file():
        raise MlxDpoError(f"{folder}: not an adapter folder (no {ADAPTER_FILE})")
    settings = settings_from_config(config)
    add_adapter(model, settings)
    weights = mx.load(str(folder / ADAPTER_FILE))
    expected = {k: v.shape for k, v in adapter_weights(model).items()}
    wrong = [k for k, v in weights.items() if expected.get(k) != v.shape]
    if wrong or set(weights) != set(expected):
        raise MlxDpoError(f"{folder}: adapter does not fit this model (mismatched tensors, e.g. {(wrong or sorted(set(expected) ^ set(weights)))[0]})")
    model.load_weights(list(weights.items()), strict=False)
    return settings

