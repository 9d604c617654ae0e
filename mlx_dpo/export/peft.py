"""The adapter as a PEFT LoRA adapter: adapter_config.json + adapter_model.safetensors (+ a card).

    export_peft("adapters/run", "out/peft")

No weights of the base are written; the base is loaded lazily, for its layer shapes only, to check
the adapter fits it and to say exactly which layers the adapter covers.

PEFT finds layers by their module names in the transformers model. mlx-lm keeps transformers' names for
the linear layers of the families in PEFT_VERIFIED (tests/test_family_exports.py checks each against
the transformers class), so the names are written as they are. Two kinds of layer have no PEFT
counterpart: mixture-of-experts experts (mlx-lm's stacked `switch_mlp`, transformers' fused expert
tensors) and routers (a router module in transformers, not a linear layer); an adapter on them is refused.
A family outside PEFT_VERIFIED is exported with a note saying its names were not checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.atomic import atomic_directory
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.export.base import (
    ExportResult,
    base_spec,
    check_out,
    hub_id,
    name_notes,
    no_stage,
    protect,
    write_failed,
    write_json,
)
from mlx_dpo.export.card import peft_card
from mlx_dpo.models.adapter import (
    check_adapter_fits,
    check_adapter_folder,
    layer_dims,
    read_adapter_config,
    read_adapter_weights,
    settings_from_config,
)
from mlx_dpo.models.load import lazy_model, model_type, resolve_model_path
from mlx_dpo.names import DEFAULT_MODEL_NAME, display_name
from mlx_dpo.settings import LoraSettings

# model_type values whose LoRA module names are checked against transformers' class (mistral runs as llama).
PEFT_VERIFIED = frozenset(
    {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "qwen2_moe",
        "mixtral",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "cohere",
        "granite",
        "olmo2",
        "smollm3",
    }
)
# Layer paths PEFT cannot target: experts (stacked in mlx-lm, fused tensors in transformers) and MoE routers.
_NOT_PEFT_LAYER = re.compile(r"(?:^|\.)(?:switch_mlp|experts)\.|\.(?:mlp|block_sparse_moe)\.gate$")


def check_peft_family(family: str, paths: list[str]) -> list[str]:
    """Refuse layers PEFT cannot target (one line naming the family); notes for an unverified family."""
    refused = [p for p in paths if _NOT_PEFT_LAYER.search(p)]
    if refused:
        raise MlxDpoError(
            f"{family}: the adapter covers {refused[0]} (a mixture-of-experts expert or router), which PEFT "
            "cannot target on the transformers model; use --format hf, or train with --lora-keys naming "
            "other layers (e.g. self_attn.q_proj,self_attn.v_proj)"
        )
    if family in PEFT_VERIFIED:
        return []
    return [f"PEFT module names for model type {family!r} are mlx-lm's, not checked against transformers"]


def peft_tensors(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """mlx-lm LoRA tensors in PEFT's layout.

    MLX computes x @ a @ b with a (in, r), b (r, out); PEFT computes B @ A @ x with A (r, in), B (out, r).
    So A = a.T and B = b.T, and the scale moves into lora_alpha = scale * r.
    """
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        path, _, kind = key.rpartition(".")
        name = {"lora_a": "lora_A", "lora_b": "lora_B"}.get(kind)
        if name is None or value.ndim != 2:
            raise MlxDpoError(f"adapter tensor {key}: PEFT export supports LoRA on linear layers only")
        out[f"base_model.model.{path}.{name}.weight"] = mx.contiguous(value.T.astype(mx.float32))
    return out


def _layer_index(path: str) -> int | None:
    match = re.search(r"(?:^|\.)layers\.(\d+)\.", path)
    return int(match.group(1)) if match else None


def peft_config(weights: dict[str, mx.array], settings: LoraSettings, base_name: str, model: nn.Module) -> dict:
    """PEFT's adapter_config.json naming exactly the layers the adapter covers."""
    paths = sorted({k.rpartition(".")[0] for k in weights})
    leaves = sorted({p.rpartition(".")[2] for p in paths})
    layers = sorted({i for i in map(_layer_index, paths) if i is not None})
    blocks = len(getattr(model, "layers", []))
    alpha = settings.scale * settings.rank
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": settings.rank,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "lora_dropout": settings.dropout,
        "target_modules": leaves,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "use_rslora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    if blocks and layers and len(layers) < blocks:
        config["layers_to_transform"] = layers
        config["layers_pattern"] = "layers"
    # Leaf names match every layer of that name in the chosen blocks; if that would cover more than the
    # adapter has (a name shared by layers it left alone), a full-match regex names exactly its layers.
    covered = {
        name
        for name, m in model.named_modules()
        if name.rpartition(".")[2] in leaves
        and layer_dims(m) is not None
        and (not layers or _layer_index(name) in layers)
    }
    if covered != set(paths):
        config["target_modules"] = "|".join(re.escape(p) for p in paths)
        config.pop("layers_to_transform", None)
        config.pop("layers_pattern", None)
    return config


def export_peft(
    adapter_path: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    overwrite: bool = False,
    on_stage: Callable[[str], None] = no_stage,
) -> ExportResult:
    """Write the adapter as a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)."""
    adapter_dir = check_adapter_folder(adapter_path)
    out = check_out(out, overwrite, keep=(adapter_dir,))
    adapter_config = read_adapter_config(adapter_dir)
    settings = settings_from_config(adapter_config)
    if settings.dora:
        raise MlxDpoError(f"{adapter_dir}: a DoRA adapter cannot be exported for PEFT yet; use --format hf or gguf")
    spec = base_spec(adapter_config, model, adapter_dir)
    path = resolve_model_path(spec)
    protect(out, (path,))
    base = lazy_model(path)  # only the layer shapes are needed to check the adapter fits, not the weights
    weights = read_adapter_weights(adapter_dir)
    check_adapter_fits(base, weights, adapter_config, adapter_dir, display_name(spec))
    notes = check_peft_family(model_type(path), sorted({k.rpartition(".")[0] for k in weights}))
    config = peft_config(weights, settings, hub_id(spec, path) or str(spec or DEFAULT_MODEL_NAME), base)
    tensors = peft_tensors(weights)
    on_stage("writing")
    try:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            mx.save_safetensors(str(tmp / "adapter_model.safetensors"), tensors, metadata={"format": "pt"})
            write_json(tmp / "adapter_config.json", config)
            card = peft_card(adapter_config, settings, spec, path, adapter_dir, out)
            (tmp / "README.md").write_text(card, encoding="utf-8")
    except OSError as e:
        raise write_failed(out, e) from None
    return ExportResult(out, "peft", name_notes(adapter_config, spec, path) + notes)
