"""Convert a GGUF file into an mlx-lm model folder: llama, qwen2, qwen3, gemma3 and phi3 (`gguf_arch`).

Reading the tensors takes one of two roads, chosen from the header (`gguf_header.gguf_layout`):

- every tensor of a type `mx.load` keeps (F32, F16, and Q4_0/Q4_1/Q8_0 as MLX quantized triples of weight,
  scales and biases with groups of 32): `mx.load` reads the file, and packed tensors stay packed. The
  embedded default model takes this road.
- any other type of NATIVE_TYPES + DEQUANTIZED_TYPES (the k-quants, Q5_0/Q5_1, BF16): every tensor is
  dequantized to float32 by the `gguf` package's own numpy code (llama.cpp's reference), so the folder holds
  exactly the weights transformers' GGUF loader computes with; F32/F16 tensors are kept as they are.

Then: names (`gguf_arch` tables), each architecture's rules (llama's Q/K row permutation, Gemma's 1 + w
norms, Phi-3's fused projections), a config.json from the metadata, and a `tokenizers` tokenizer rebuilt
from the embedded vocabulary (`gguf_tokenizer`). An architecture or tensor type that is not supported is
one line naming it; "damaged" is said of files whose header or tensor data is cut short.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_dpo.atomic import atomic_directory
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.gguf_arch import (
    ROPE_TENSORS,
    TOP_NAMES,
    GgufArch,
    architecture_of,
    gguf_to_config,
    llama3_rope_config,
)
from mlx_dpo.models.gguf_header import TensorInfo, gguf_layout
from mlx_dpo.models.gguf_tokenizer import build_tokenizer_files

SOURCE_FILE = "mlx_dpo_source.json"  # in a converted folder: the GGUF file it came from
# GGML type ids (gguf.GGMLQuantizationType) by name.
NATIVE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8}
DEQUANTIZED_TYPES = {"Q5_0": 6, "Q5_1": 7, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30}
_TYPE_NAMES = {v: k for k, v in {**NATIVE_TYPES, **DEQUANTIZED_TYPES}.items()}
_CHUNK_ROWS = 4096  # rows dequantized at a time: bounded memory, few numpy calls


def read_gguf(path: str | Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Weights and metadata of a GGUF file, with a clear error for a missing, damaged, unsupported or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise MlxDpoError(f"{path}: GGUF file not found")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise MlxDpoError(f"{path}: cannot read GGUF file ({e.strerror})") from None
    if magic != b"GGUF":
        raise MlxDpoError(f"{path}: not a GGUF file (missing the GGUF magic bytes)")
    fields, tensors = gguf_layout(path)
    metadata = {key: value for key, (value, _, _) in fields.items()}
    architecture_of(metadata, str(path))  # an unknown architecture is named before any tensor is read
    for info in tensors:
        if info.type not in _TYPE_NAMES:
            raise MlxDpoError(
                f"{path}: tensor {info.name} is stored as {_type_name(info.type)}, a type mlx-dpo "
                f"cannot import (supported: {', '.join(_TYPE_NAMES.values())})"
            )
    if all(info.type in NATIVE_TYPES.values() for info in tensors):
        try:
            weights, _ = mx.load(str(path), return_metadata=True)
        except (RuntimeError, ValueError) as e:
            detail = str(e).replace("[load_gguf] ", "")
            raise MlxDpoError(f"{path}: damaged or truncated GGUF file ({detail})") from None
        return weights, metadata
    return _dequantized(path, tensors), metadata


def _type_name(ggml_type: int) -> str:
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"unknown type {ggml_type}"


def _dequantized(path: Path, tensors: list[TensorInfo]) -> dict[str, mx.array]:
    """Every tensor as float32 (F16 kept), dequantized by the `gguf` package."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    weights = {}
    for info in tensors:
        raw = data[info.offset : info.offset + info.nbytes]
        if info.type == NATIVE_TYPES["F32"]:
            value = raw.view(np.float32).reshape(info.shape)
        elif info.type == NATIVE_TYPES["F16"]:
            value = raw.view(np.float16).reshape(info.shape)
        else:
            value = dequantize(raw.reshape(*info.shape[:-1], -1), info.type).reshape(info.shape)
        weights[info.name] = mx.array(value)
    return weights


def dequantize(raw: np.ndarray, ggml_type: int) -> np.ndarray:
    """Packed rows (bytes) of a GGML type as float32, by the `gguf` package's numpy code.

    `gguf.quants.dequantize` works through 16 rows at a time, which makes Python the cost on a 262k-row
    embedding (about 6 s); its per-type class does the same arithmetic on as many rows as it is given.
    """
    import gguf

    qtype = gguf.GGMLQuantizationType(ggml_type)
    quant = getattr(gguf.quants, qtype.name, None)
    rows = raw.reshape(-1, raw.shape[-1])
    if quant is None or not hasattr(quant, "dequantize_rows"):
        return gguf.quants.dequantize(raw, qtype)
    parts = [
        quant.dequantize_rows(np.ascontiguousarray(rows[i : i + _CHUNK_ROWS]))
        for i in range(0, rows.shape[0], _CHUNK_ROWS)
    ]
    return np.concatenate(parts).reshape(*raw.shape[:-1], -1)


def unpermute_rows(w: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's per-head row interleave of Q/K so mlx-lm's non-traditional RoPE applies.

    llama.cpp stores each head's rows as (head_dim/2, 2) pairs; HF order is (2, head_dim/2).
    Works on packed quantized weights and on scales/biases alike: groups run along columns.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rows(w: mx.array, n_heads: int) -> mx.array:
    """llama.cpp's Q/K row permutation (the inverse of `unpermute_rows`), used when writing GGUF."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_to_mlx_weights(
    weights: dict[str, mx.array], config: dict, arch: GgufArch, source: str = "GGUF"
) -> dict[str, mx.array]:
    """Rename GGUF tensors to mlx-lm's names and apply the architecture's rules (Q/K rows, Gemma's norms).

    A tensor with no place in the mlx-lm model is refused: dropping it would run a different model.
    """
    out: dict[str, mx.array] = {}
    split_qkv: dict[str, dict[str, mx.array]] = {}  # Phi-3 written with separate Q, K, V
    for key, value in weights.items():
        stem, _, kind = key.rpartition(".")  # kind: weight, bias, scales or biases
        match = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
        part = match.group(2) if match else stem
        if part in ROPE_TENSORS:
            continue  # read into the config (llama3_rope_config) or refused there
        if arch.norm_shift and part.endswith("norm") and kind == "weight":
            value = value.astype(mx.float32) - arch.norm_shift
        if match and arch.name == "phi3" and part in ("attn_q", "attn_k", "attn_v"):
            split_qkv.setdefault(f"model.layers.{match.group(1)}.self_attn.qkv_proj.{kind}", {})[part] = value
            continue
        if match and part in arch.layer_names:
            if arch.permute_qk and part in ("attn_q", "attn_k"):
                heads = config["num_attention_heads" if part == "attn_q" else "num_key_value_heads"]
                value = unpermute_rows(value, heads)
            out[f"model.layers.{match.group(1)}.{arch.layer_names[part]}.{kind}"] = value
        elif not match and stem in TOP_NAMES:
            out[f"{TOP_NAMES[stem]}.{kind}"] = value
        else:
            raise MlxDpoError(f"{source}: tensor {key} has no place in mlx-lm's {arch.model_type} model")
    for name, parts in split_qkv.items():
        out[name] = mx.concatenate([parts["attn_q"], parts["attn_k"], parts["attn_v"]], axis=0)
    return out


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Convert `gguf_path` into an mlx-lm model folder at `out_dir`, atomically.

    An existing non-empty `out_dir` is never touched. Every failure a user can fix (missing,
    damaged or unsupported file, existing output, full disk) raises `MlxDpoError`, and leaves
    nothing at `out_dir`.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise MlxDpoError(f"{out_dir}: already exists; remove it or choose another output folder")
    weights, metadata = read_gguf(gguf_path)
    source = str(gguf_path)
    arch = architecture_of(metadata, source)
    config = gguf_to_config(metadata, {k: tuple(v.shape) for k, v in weights.items()}, source)
    if "rope_freqs.weight" in weights:
        config["rope_scaling"] = llama3_rope_config(np.array(weights["rope_freqs.weight"]), config, source)
    tokenizer_files = build_tokenizer_files(metadata, source, arch.name)
    mlx_weights = gguf_to_mlx_weights(weights, config, arch, source)
    expected = "model.layers.{}." + next(iter(arch.layer_names.values())) + ".weight"
    missing = [i for i in range(config["num_hidden_layers"]) if expected.format(i) not in mlx_weights]
    if missing or "model.embed_tokens.weight" not in mlx_weights:
        raise MlxDpoError(f"{source}: tensors missing for layers {missing[:5]} or the embedding")
    if any(k.endswith(".scales") for k in mlx_weights):
        # Every type mx.load keeps packed uses groups of 32; bits vary per tensor and mlx-lm infers them
        # from each tensor's shape.
        config["quantization"] = {"group_size": 32, "bits": _bits_of_first_quantized(mlx_weights)}
    generation_config = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    files = {
        "config.json": config,
        "generation_config.json": generation_config,
        **tokenizer_files,
        "special_tokens_map.json": {
            k: v
            for k, v in tokenizer_files["tokenizer_config.json"].items()
            if k in ("bos_token", "eos_token", "pad_token", "unk_token") and v
        },
        SOURCE_FILE: {"gguf": str(gguf_path.resolve()), "name": metadata.get("general.name")},
    }
    try:
        _write_model_folder(out_dir, mlx_weights, files)
    except OSError as e:
        raise MlxDpoError(f"{out_dir}: cannot write the converted model ({e.strerror or e})") from None
    return out_dir


def _bits_of_first_quantized(weights: dict[str, mx.array]) -> int:
    for key, scales in weights.items():
        if key.endswith(".scales"):
            packed = weights[key[: -len(".scales")] + ".weight"]
            return packed.shape[-1] * 32 // (scales.shape[-1] * 32)
    raise ValueError("no quantized tensor")


def _write_model_folder(out_dir: Path, weights: dict[str, mx.array], files: dict[str, Any]) -> None:
    with atomic_directory(out_dir) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        for name, content in files.items():  # JSON objects, or JSON already written out
            text = content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False)
            (tmp / name).write_text(text, encoding="utf-8")
