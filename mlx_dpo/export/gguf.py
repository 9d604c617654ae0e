"""Write a fused model as a GGUF file llama.cpp can run (F16 or Q8_0): llama, mistral, qwen2, qwen3, gemma3, phi3.

The writer is llama.cpp's own Python package (`gguf`). What this module adds is each architecture's layout
as llama.cpp's converter writes it, from the same tables GGUF import reads with (`mlx_dpo.models.gguf_arch`):
llama.cpp's names, its row order for Q and K (its llama architecture rotates interleaved pairs; the others
rotate halves, as mlx-lm does, so their rows stay), Gemma's norms stored as 1 + w, and the `<arch>.*`
metadata. The tokenizer is copied verbatim from the GGUF the base was converted from, or rebuilt from
`tokenizer.json` when the base was a Hugging Face folder (`gguf_vocab`). Other families, and models that
llama.cpp would run differently from mlx-lm, are refused before the base is loaded (`gguf_family`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.export.base import ExportResult, base_spec, no_stage, protect, source_gguf
from mlx_dpo.export.card import base_license
from mlx_dpo.export.fuse import FusedModel, fused_model
from mlx_dpo.export.gguf_vocab import Entry, _kv, built_tokenizer, copied_tokenizer
from mlx_dpo.models.adapter import check_adapter_folder, read_adapter_config
from mlx_dpo.models.gguf import permute_rows
from mlx_dpo.models.gguf_arch import (
    ARCHITECTURES,
    GEMMA3_27B_BLOCKS,
    GEMMA3_LOCAL_ROPE_BASE,
    GEMMA3_PATTERN,
    TOP_NAMES,
    GgufArch,
    llama3_rope_factors,
    rope_scaling,
)
from mlx_dpo.models.load import read_config, resolve_model_path
from mlx_dpo.settings import GGUF_TYPES

# model_type -> how llama.cpp reads it (llama.cpp's converter writes Mistral as llama, too).
GGUF_FAMILIES: dict[str, GgufArch] = {
    "llama": ARCHITECTURES["llama"],
    "mistral": ARCHITECTURES["llama"],
    "qwen2": ARCHITECTURES["qwen2"],
    "qwen3": ARCHITECTURES["qwen3"],
    "gemma3_text": ARCHITECTURES["gemma3"],
    "phi3": ARCHITECTURES["phi3"],
}
_TO_GGUF_TOP = {v: k for k, v in TOP_NAMES.items()}


def _gguf_name(name: str, arch: GgufArch) -> str:
    stem, _, kind = name.rpartition(".")
    parts = stem.split(".")
    if parts[:2] == ["model", "layers"] and len(parts) > 3:
        part = arch.to_gguf().get(".".join(parts[3:]))
        if part is not None:
            return f"blk.{parts[2]}.{part}.{kind}"
    elif stem in _TO_GGUF_TOP:
        return f"{_TO_GGUF_TOP[stem]}.{kind}"
    raise MlxDpoError(f"tensor {name}: no llama.cpp name for it in the {arch.name} architecture")


def gguf_tensors(model: Any, config: dict, gguf_type: str) -> list[tuple[str, np.ndarray, Any]]:
    """(llama.cpp name, data, raw GGML type or None) for every parameter of a dense model of GGUF_FAMILIES."""
    import gguf

    arch = gguf_family(config)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    out = []
    for name, value in sorted(tree_flatten(model.parameters())):
        if "rotary_emb" in name:
            continue  # recomputed from the metadata
        if arch.permute_qk and ".self_attn.q_proj." in name:
            value = permute_rows(value, heads)  # llama.cpp's rotary layout (pairs interleaved per head)
        elif arch.permute_qk and ".self_attn.k_proj." in name:
            value = permute_rows(value, kv_heads)
        gguf_name = _gguf_name(name, arch)
        data = np.array(value.astype(mx.float32))
        if arch.norm_shift and gguf_name.endswith("norm.weight"):
            data = data + arch.norm_shift  # Gemma: llama.cpp multiplies by the stored weight, mlx-lm by 1 + w
        if data.ndim == 1:
            out.append((gguf_name, data, None))  # norms and biases stay F32, as in llama.cpp
        elif gguf_type == "q8_0" and data.shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            out.append((gguf_name, gguf.quants.quantize(data, qtype), qtype))
        else:
            # F16 (or a Q8_0 row length that is no multiple of its 32-value blocks: F16 too, as llama.cpp does).
            out.append((gguf_name, data.astype(np.float16), None))
    factors = llama3_rope_factors(config)
    if factors is not None:
        out.append(("rope_freqs.weight", factors, None))
    return out


def arch_metadata(config: dict, name: str, gguf_type: str, license_name: str | None) -> list[Entry]:
    """general.* and the architecture's own keys (`llama.*`, `qwen2.*`, `gemma3.*`, ...)."""
    import gguf

    T = gguf.GGUFValueType
    arch = gguf_family(config).name
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    rope_dims = int(head_dim * float(config.get("partial_rotary_factor") or 1.0))
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if gguf_type == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    entries = [
        _kv("general.name", name, T.STRING),
        _kv("general.file_type", int(file_type), T.UINT32),
        _kv("general.quantization_version", gguf.GGML_QUANT_VERSION, T.UINT32),
        _kv(f"{arch}.context_length", int(config.get("max_position_embeddings", 2048)), T.UINT32),
        _kv(f"{arch}.embedding_length", hidden, T.UINT32),
        _kv(f"{arch}.block_count", int(config["num_hidden_layers"]), T.UINT32),
        _kv(f"{arch}.feed_forward_length", int(config["intermediate_size"]), T.UINT32),
        _kv(f"{arch}.rope.dimension_count", rope_dims, T.UINT32),
        _kv(f"{arch}.attention.head_count", heads, T.UINT32),
        _kv(f"{arch}.attention.head_count_kv", int(config.get("num_key_value_heads") or heads), T.UINT32),
        _kv(f"{arch}.attention.layer_norm_rms_epsilon", float(config.get("rms_norm_eps", 1e-5)), T.FLOAT32),
        _kv(f"{arch}.rope.freq_base", float(config.get("rope_theta", 10000.0)), T.FLOAT32),
        _kv(f"{arch}.vocab_size", int(config["vocab_size"]), T.UINT32),
    ]
    if head_dim != hidden // heads:
        entries += [
            _kv(f"{arch}.attention.key_length", head_dim, T.UINT32),
            _kv(f"{arch}.attention.value_length", head_dim, T.UINT32),
        ]
    if arch == "gemma3":
        entries.append(_kv("gemma3.attention.sliding_window", int(config["sliding_window"]), T.UINT32))
    if license_name:
        entries.append(_kv("general.license", license_name, T.STRING))
    scaling = rope_scaling(config)
    if scaling:
        kind = scaling.get("type") or scaling.get("rope_type")
        if kind == "linear":
            entries += [
                _kv(f"{arch}.rope.scaling.type", "linear", T.STRING),
                _kv(f"{arch}.rope.scaling.factor", float(scaling["factor"]), T.FLOAT32),
            ]
        elif kind != "llama3" or arch != "llama":  # llama3's is the rope_freqs tensor (gguf_tensors)
            raise MlxDpoError(
                f"rope scaling {kind!r} is not supported for GGUF export of {arch} (linear, and llama3 for llama)"
            )
    return entries


def check_gguf_out(out: str | Path, overwrite: bool) -> Path:
    out = Path(out).expanduser()
    if out.suffix.lower() != ".gguf":
        raise MlxDpoError(f"--out {out}: for --format gguf, name the .gguf file to write (e.g. model-f16.gguf)")
    if out.is_dir():
        raise MlxDpoError(f"--out {out}: is a folder; name the .gguf file to write")
    if out.exists() and not overwrite:
        raise MlxDpoError(f"--out {out}: file exists; pass --overwrite or choose another name")
    return out


def gguf_family(config: dict) -> GgufArch:
    """How llama.cpp reads this model_type, or one line naming what it cannot be written for: another family,
    or a model llama.cpp's architecture would run differently from mlx-lm."""
    kind = config.get("model_type")
    arch = GGUF_FAMILIES.get(kind)
    if arch is None:
        raise MlxDpoError(
            f"{kind}: GGUF export supports the {', '.join(GGUF_FAMILIES)} families only; "
            "use --format hf and llama.cpp's convert_hf_to_gguf.py"
        )
    if arch.name == "llama" and "sliding_attention" in (config.get("layer_types") or []):
        raise MlxDpoError(
            f"{kind}: a model with sliding-window layers cannot be written as GGUF "
            "(llama.cpp's llama architecture attends globally); use --format hf"
        )
    if arch.name == "gemma3":
        _check_gemma3(config)
    if arch.name == "phi3" and rope_scaling(config):
        raise MlxDpoError(f"{kind}: Phi-3's long-context rope scaling cannot be written as GGUF yet; use --format hf")
    return arch


def _check_gemma3(config: dict) -> None:
    """llama.cpp's gemma3 fixes what mlx-lm reads from the config: refuse a model that differs there."""
    layers, head_dim = int(config["num_hidden_layers"]), int(config.get("head_dim") or 256)
    query_scale = (
        int(config["hidden_size"]) // int(config["num_attention_heads"]) if layers == GEMMA3_27B_BLOCKS else head_dim
    )
    fixed = {
        "sliding_window_pattern": GEMMA3_PATTERN,
        "rope_local_base_freq": GEMMA3_LOCAL_ROPE_BASE,
        "query_pre_attn_scalar": query_scale,
    }
    for key, value in fixed.items():
        if float(config.get(key, value)) != float(value):
            raise MlxDpoError(
                f"gemma3_text: {key} {config[key]} differs from llama.cpp's Gemma 3 ({value}); "
                "such a model cannot be written as GGUF, use --format hf"
            )
    if config.get("final_logit_softcapping") or config.get("attn_logit_softcapping"):
        raise MlxDpoError("gemma3_text: logit soft-capping cannot be written as GGUF; use --format hf")


def check_family(model_folder: Path) -> dict:
    """The base's config, if llama.cpp can read its family (refused with one line otherwise)."""
    config = read_config(model_folder)
    gguf_family(config)
    return config


def write_gguf(
    path: Path, entries: list[Entry], tensors: list[tuple[str, np.ndarray, Any]], arch: str = "llama"
) -> None:
    """Write the file beside `path` and rename it into place: a failure never leaves half a GGUF."""
    import gguf

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for key, value, vtype, sub_type in entries:
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
        for name, data, raw_type in tensors:
            writer.add_tensor(name, data, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise MlxDpoError(f"--out {path}: cannot write the GGUF file ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def export_gguf(
    adapter_path: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    gguf_type: str = "f16",
    overwrite: bool = False,
    on_stage: Callable[[str], None] = no_stage,
) -> ExportResult:
    """Fuse the adapter into a dequantized base and write it as one GGUF file."""
    if gguf_type not in GGUF_TYPES:
        raise MlxDpoError(f"--gguf-type {gguf_type}: choose from {', '.join(GGUF_TYPES)}")
    adapter_dir = check_adapter_folder(adapter_path)
    out = check_gguf_out(out, overwrite)
    spec = base_spec(read_adapter_config(adapter_dir), model, adapter_dir)
    check_family(resolve_model_path(spec))  # before the (slow) load: refuse other families at once
    fused = fused_model(adapter_dir, model=model, dequantize=True, on_stage=on_stage)
    protect(out, (fused.loaded.path, adapter_dir))
    on_stage("writing")
    return ExportResult(out, "gguf", fused.notes + write_fused_gguf(fused, out, gguf_type))


def write_fused_gguf(fused: FusedModel, out: Path, gguf_type: str = "f16") -> list[str]:
    """Write an already fused, dense model (of GGUF_FAMILIES) as GGUF; returns notes for the user."""
    entries, notes = gguf_metadata(fused, gguf_type)
    tensors = gguf_tensors(fused.loaded.model, fused.loaded.config, gguf_type)
    write_gguf(out, entries, tensors, gguf_family(fused.loaded.config).name)
    return notes


def gguf_metadata(fused: FusedModel, gguf_type: str) -> tuple[list[Entry], list[str]]:
    folder = fused.loaded.path
    name = f"{fused.base_name} DPO"
    entries = arch_metadata(fused.loaded.config, name, gguf_type, base_license(folder))
    source = source_gguf(folder)
    if source is not None:
        return entries + copied_tokenizer(source), []
    tokenizer_entries, notes = built_tokenizer(folder, fused.loaded.config)
    return entries + tokenizer_entries, ["tokenizer metadata rebuilt from tokenizer.json (no source GGUF)", *notes]
