"""Fuse an adapter into its base, in memory: what the HF and GGUF exports write out.

Each LoRA/DoRA layer is replaced by its base layer with the update folded in (mlx-lm's own `fuse`).
A quantized base is re-quantized after the update is added, unless dequantized.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlx_dpo.export.base import base_spec, hub_id, load_with_adapter, no_stage
from mlx_dpo.models.adapter import check_adapter_folder, read_adapter_config
from mlx_dpo.models.load import has_quantized_layers
from mlx_dpo.models.session import ModelSession
from mlx_dpo.names import display_name
from mlx_dpo.settings import LoraSettings


@dataclass
class FusedModel:
    loaded: ModelSession  # .model has every adapter layer fused into a plain (or quantized) layer
    adapter_config: dict
    settings: LoraSettings
    fused_layers: int
    base_name: str  # how the base is named in messages, the model card title and the GGUF's general.name
    notes: list[str] = field(default_factory=list)


def fused_model(
    adapter_path: str | Path,
    *,
    model: str | None = None,
    dequantize: bool = False,
    on_stage: Callable[[str], None] = no_stage,
) -> FusedModel:
    """Base + adapter, fused in memory, in the base's precision (fp32 once dequantized on load).

    `on_stage` hears "loading base" and "fusing" as those steps begin (the app shows them).
    """
    adapter_dir = check_adapter_folder(adapter_path)
    spec = base_spec(read_adapter_config(adapter_dir), model, adapter_dir)
    on_stage("loading base")
    loaded, adapter_config, settings, notes = load_with_adapter(adapter_dir, spec, dequantize=dequantize)
    on_stage("fusing")
    count = loaded.fuse(dequantize=dequantize)
    loaded.quantized = has_quantized_layers(loaded.model)
    loaded.extra["hub_id"] = hub_id(spec, loaded.path)
    return FusedModel(loaded, adapter_config, settings, count, display_name(spec), notes)
