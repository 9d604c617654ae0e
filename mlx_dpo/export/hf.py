"""The Hugging Face model folder: a fused model's weights, config, generation config, tokenizer files, card.

    export_hf("adapters/run", "out/fused", dequantize=True)   # model weights + config + tokenizer + card

The folder is written into a temporary folder beside `out` and renamed at the end, so a failure
(bad adapter, wrong base, full disk) leaves nothing behind. Weights are split into shards by
mlx-lm's `make_shards`, named and indexed as transformers and mlx-lm expect.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_dpo import compat
from mlx_dpo.atomic import atomic_directory
from mlx_dpo.export.base import ExportResult, check_out, no_stage, protect, write_failed, write_json
from mlx_dpo.export.card import model_card
from mlx_dpo.export.fuse import fused_model
from mlx_dpo.models.adapter import check_adapter_folder
from mlx_dpo.models.load import read_config

# Everything a tokenizer may need, in the layouts transformers and mlx-lm read.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
TORCH_DTYPE = {mx.float16: "float16", mx.bfloat16: "bfloat16", mx.float32: "float32"}
DECLARED_DTYPE = {name: dtype for dtype, name in TORCH_DTYPE.items()}  # config.json's torch_dtype (or dtype)
_FP16_MAX = 65504.0
MAX_SHARD_GB = 5  # the Hub's usual shard size (and mlx-lm's)


def float_dtype(model: nn.Module, config: dict | None = None) -> mx.Dtype:
    """The dense export's type: the one the base's config declares, else float16 (what the Hub expects).

    The declared type counts because on the CPU backend every base is loaded as float32: a bfloat16 base
    stays bfloat16 and a float32 one float32 (exactly the fused model). fp16 tops out at 65504: a model with
    larger weights stays in float32 rather than turning into infs.
    """
    declared = DECLARED_DTYPE.get(str((config or {}).get("torch_dtype") or (config or {}).get("dtype")))
    params = [v for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating)]
    if declared is not None and declared != mx.float16:  # bfloat16 or float32, as declared
        return declared
    if declared is None and any(v.dtype == mx.bfloat16 for v in params):
        return mx.bfloat16
    largest = max((mx.abs(v).max().item() for v in params), default=0.0)
    return mx.float16 if largest < _FP16_MAX else mx.float32


def save_weights(folder: Path, model: nn.Module, *, fmt: str, max_shard_gb: int = MAX_SHARD_GB) -> None:
    """model.safetensors (or model-00001-of-0000N.safetensors shards) + model.safetensors.index.json.

    Parameters keep the model's own names, in name order. `fmt` goes into the safetensors metadata:
    "pt" for dense weights transformers reads, "mlx" for MLX-quantized ones.
    """
    weights = dict(sorted(tree_flatten(model.parameters())))
    shards = compat.shards(weights, max_shard_gb)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for name, shard in zip(names, shards):
        mx.save_safetensors(str(folder / name), shard, metadata={"format": fmt})
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())}, "weight_map": weight_map}
    write_json(folder / "model.safetensors.index.json", index)


def export_config(base_folder: Path, quantization: dict | None, dtype: mx.Dtype | None) -> dict:
    """The base's config.json, with the quantization keys matching what was written.

    `quantization` is mlx-lm's view of the loaded base (it translates AWQ/GPTQ/... configs to its own
    format on load, and the weights are written in that format), None once dense.
    """
    config = read_config(base_folder)
    if quantization is not None:
        # mlx-lm reads "quantization", the Hub's MLX tooling "quantization_config": keep both in step.
        config["quantization"] = config["quantization_config"] = quantization
    else:
        config.pop("quantization", None)
        config.pop("quantization_config", None)
        if dtype is not None:
            config["torch_dtype"] = TORCH_DTYPE[dtype]
            config.pop("dtype", None)  # transformers 5's name for it: one declaration, the one written
    return config


def generation_config(base_folder: Path, config: dict) -> dict:
    """The base's generation_config.json, else the token ids transformers needs from config.json."""
    path = base_folder / "generation_config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pass
    return {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}


def copy_tokenizer(base_folder: Path, dest: Path) -> list[str]:
    """Copy the base's tokenizer files into `dest`; returns the names copied."""
    copied = []
    for name in TOKENIZER_FILES:
        if (base_folder / name).is_file():
            shutil.copyfile(base_folder / name, dest / name)
            copied.append(name)
    return copied


def export_hf(
    adapter_path: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    dequantize: bool = False,
    overwrite: bool = False,
    on_stage: Callable[[str], None] = no_stage,
) -> ExportResult:
    """Fuse the adapter into its base and write a Hugging Face model folder (weights, config, tokenizer, card)."""
    adapter_dir = check_adapter_folder(adapter_path)
    out = check_out(out, overwrite, keep=(adapter_dir,))
    fused = fused_model(adapter_dir, model=model, dequantize=dequantize, on_stage=on_stage)
    loaded = fused.loaded
    protect(out, (loaded.path,))
    dtype = None
    if not loaded.quantized:
        dtype = float_dtype(loaded.model, loaded.config)
        loaded.model.set_dtype(dtype)
        mx.eval(loaded.model.parameters())
    quantization = loaded.config.get("quantization") or loaded.config.get("quantization_config") or {}
    config = export_config(loaded.path, quantization if loaded.quantized else None, dtype)
    on_stage("writing")
    try:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            save_weights(tmp, loaded.model, fmt="mlx" if loaded.quantized else "pt")
            write_json(tmp / "config.json", config)
            write_json(tmp / "generation_config.json", generation_config(loaded.path, config))
            copy_tokenizer(loaded.path, tmp)
            card = model_card(fused, adapter_dir, out, torch_dtype=None if dtype is None else TORCH_DTYPE[dtype])
            (tmp / "README.md").write_text(card, encoding="utf-8")
    except OSError as e:
        raise write_failed(out, e) from None
    notes = list(fused.notes)
    if any(".switch_mlp." in name for name, _ in tree_flatten(loaded.model.parameters())):
        # mlx-lm stacks a mixture-of-experts' experts into one tensor per projection; transformers' layout differs.
        notes.append(
            "the experts are written in mlx-lm's stacked layout (switch_mlp): mlx-lm loads this folder, "
            "transformers does not"
        )
    if loaded.quantized:
        notes.append(
            "the export keeps the base's MLX quantization (mlx-lm only); add --dequantize for a dense "
            "model transformers can load"
        )
    return ExportResult(out, "hf", notes)
