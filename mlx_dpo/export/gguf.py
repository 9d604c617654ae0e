"""Write a fused model as a GGUF file llama.cpp can run (F16 or Q8_0): llama, mistral, qwen2, qwen3.

The writer is llama.cpp's own Python package (`gguf`). What this module adds is the mapping back
from mlx-lm's names to llama.cpp's, llama.cpp's row order for Q and K (its llama architecture rotates
interleaved pairs; qwen2/qwen3 rotate halves, as mlx-lm does, so their rows stay), the `<arch>.*`
metadata, and the tokenizer: copied verbatim from the GGUF the base was converted from, or rebuilt
from `tokenizer.json` when the base was a Hugging Face folder. Other families are refused before
the base is loaded (GGUF_FAMILIES is the list).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.export.base import ExportResult, base_spec, no_stage, protect, source_gguf
from mlx_dpo.export.card import base_license
from mlx_dpo.export.fuse import FusedModel, fused_model
from mlx_dpo.models.gguf_header import gguf_fields
from mlx_dpo.models.adapter import check_adapter_folder, read_adapter_config
from mlx_dpo.models.gguf import CONTROL_TOKEN, USER_DEFINED_TOKEN, _LAYER_NAMES, _TOP_NAMES, permute_rows
from mlx_dpo.models.load import resolve_model_path
from mlx_dpo.settings import GGUF_TYPES

# One metadata field to write: (key, value, gguf.GGUFValueType, item type of an array or None).
Entry = tuple[str, Any, Any, Any]
NORMAL_TOKEN, UNUSED_TOKEN = 1, 5
# mlx-lm name -> llama.cpp name (the converter's tables, reversed).
_TO_GGUF_LAYER = {v: k for k, v in _LAYER_NAMES.items()}
_TO_GGUF_TOP = {v: k for k, v in _TOP_NAMES.items()}



@dataclass(frozen=True)
class GgufFamily:
    arch: str  # llama.cpp's general.architecture and metadata prefix
    permute_qk: bool  # llama.cpp's llama rope layout: Q/K rows interleaved per head
    layer_names: dict[str, str] = field(default_factory=dict)  # mlx-lm -> llama.cpp, besides llama's


# model_type -> how llama.cpp reads it (llama.cpp's converter writes Mistral as llama, too).
GGUF_FAMILIES = {
    "llama": GgufFamily("llama", True),
    "mistral": GgufFamily("llama", True),
    "qwen2": GgufFamily("qwen2", False),
    "qwen3": GgufFamily("qwen3", False, {"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}),
}

# A tokenizer.json pre-tokenizer, as (kind, detail) steps -> the llama.cpp pre-tokenizer that splits the same way.
_PRE_TOKENIZER_NAMES = {
    (("Digits", True), ("ByteLevel", True)): "smollm",
    (("ByteLevel", True),): "gpt-2",  # llama.cpp knows GPT-2's split as "gpt-2" ("gpt2" fails to load)
}


def _gguf_name(name: str, family: GgufFamily) -> str:
    stem, _, kind = name.rpartition(".")
    parts = stem.split(".")
    if parts[:2] == ["model", "layers"] and len(parts) > 3:
        layer = ".".join(parts[3:])
        part = _TO_GGUF_LAYER.get(layer) or family.layer_names.get(layer)
        if part is not None:
            return f"blk.{parts[2]}.{part}.{kind}"
    elif stem in _TO_GGUF_TOP:
        return f"{_TO_GGUF_TOP[stem]}.{kind}"
    raise MlxDpoError(f"tensor {name}: no llama.cpp name for it in the {family.arch} architecture")


def gguf_tensors(model: Any, config: dict, gguf_type: str) -> list[tuple[str, np.ndarray, Any]]:
    """(llama.cpp name, data, raw GGML type or None) for every parameter of a dense model of GGUF_FAMILIES."""
    import gguf

    family = gguf_family(config)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads", heads))
    out = []
    for name, value in sorted(tree_flatten(model.parameters())):
        if "rotary_emb" in name:
            continue  # recomputed from the metadata
        if family.permute_qk and ".self_attn.q_proj." in name:
            value = permute_rows(value, heads)  # llama.cpp's rotary layout (pairs interleaved per head)
        elif family.permute_qk and ".self_attn.k_proj." in name:
            value = permute_rows(value, kv_heads)
        data = np.array(value.astype(mx.float32))
        if data.ndim == 1:
            out.append((_gguf_name(name, family), data, None))  # norms and biases stay F32, as in llama.cpp
        elif gguf_type == "q8_0" and data.shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            out.append((_gguf_name(name, family), gguf.quants.quantize(data, qtype), qtype))
        else:
            # F16 (or a Q8_0 row length that is no multiple of its 32-value blocks: F16 too, as llama.cpp does).
            out.append((_gguf_name(name, family), data.astype(np.float16), None))
    factors = llama3_rope_factors(config)
    if factors is not None:
        out.append(("rope_freqs.weight", factors, None))
    return out


def _kv(key: str, value: Any, vtype: Any, sub_type: Any = None) -> Entry:
    return key, value, vtype, sub_type


def copied_tokenizer(source: Path) -> list[Entry]:
    """Every tokenizer.* field of the source GGUF, with its original value types."""
    import gguf

    T = gguf.GGUFValueType
    return [
        _kv(key, value, T(vtype), None if item_type is None else T(item_type))
        for key, (value, vtype, item_type) in gguf_fields(source, "tokenizer.").items()
    ]


def _pre_tokenizer_name(pre: dict | None) -> str | None:
    if not pre:
        return None
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    shape = []
    for step in steps:
        if step.get("type") == "Digits":
            shape.append(("Digits", bool(step.get("individual_digits"))))
        elif step.get("type") == "ByteLevel":
            shape.append(("ByteLevel", bool(step.get("use_regex", True))))
        else:
            return None
    return _PRE_TOKENIZER_NAMES.get(tuple(shape))


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def built_tokenizer(folder: Path, config: dict) -> tuple[list[Entry], list[str]]:
    """tokenizer.* metadata rebuilt from a Hugging Face byte-level BPE tokenizer.json, plus notes."""
    import gguf

    T = gguf.GGUFValueType
    try:
        tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        tok_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise MlxDpoError(f"{folder}: no {Path(e.filename).name}; GGUF export needs a tokenizer.json") from None
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{folder}: unreadable tokenizer files ({e})") from None
    bpe = tok.get("model", {})
    if bpe.get("type") != "BPE" or not (tok.get("decoder") or {}).get("type") == "ByteLevel":
        raise MlxDpoError(f"{folder}: GGUF export supports byte-level BPE tokenizers only")
    vocab: dict[str, int] = dict(bpe.get("vocab", {}))
    kinds: dict[int, int] = {}
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = int(added["id"])
        kinds[int(added["id"])] = CONTROL_TOKEN if added.get("special") else USER_DEFINED_TOKEN
    size = max(int(config.get("vocab_size", 0)), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]  # ids no token uses: placeholders, as llama.cpp's converter writes
    types = [UNUSED_TOKEN] * size
    for text, idx in vocab.items():
        tokens[idx], types[idx] = text, kinds.get(idx, NORMAL_TOKEN)
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe.get("merges", [])]

    notes = []
    pre = _pre_tokenizer_name(tok.get("pre_tokenizer"))
    if pre is None:
        pre = "default"
        notes.append("the tokenizer's pre-tokenizer has no known llama.cpp name; the GGUF says 'default'")
    entries = [
        _kv("tokenizer.ggml.model", "gpt2", T.STRING),
        _kv("tokenizer.ggml.pre", pre, T.STRING),
        _kv("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING),
        _kv("tokenizer.ggml.token_type", types, T.ARRAY, T.INT32),
    ]
    if merges:
        entries.append(_kv("tokenizer.ggml.merges", merges, T.ARRAY, T.STRING))
    for name, gguf_name in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        text = _token_text(tok_config.get(f"{name}_token"))
        idx = vocab.get(text) if text is not None else None
        if idx is None and isinstance(config.get(f"{name}_token_id"), (int, list)):
            ids = config[f"{name}_token_id"]
            idx = ids[0] if isinstance(ids, list) else ids
        if idx is not None:
            entries.append(_kv(f"tokenizer.ggml.{gguf_name}_token_id", int(idx), T.UINT32))
    entries.append(_kv("tokenizer.ggml.add_bos_token", bool(tok_config.get("add_bos_token", False)), T.BOOL))
    entries.append(_kv("tokenizer.ggml.add_eos_token", bool(tok_config.get("add_eos_token", False)), T.BOOL))
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # several named templates: llama.cpp takes the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        entries.append(_kv("tokenizer.chat_template", template, T.STRING))
    return entries, notes


def llama_metadata(config: dict, name: str, gguf_type: str, license_name: str | None) -> list[Entry]:
    """general.* and the architecture's own keys (`llama.*`, `qwen2.*`, ...: the same fields for each)."""
    import gguf

    T = gguf.GGUFValueType
    arch = gguf_family(config).arch
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if gguf_type == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    entries = [
        _kv("general.name", name, T.STRING),
        _kv("general.file_type", int(file_type), T.UINT32),
        _kv("general.quantization_version", gguf.GGML_QUANT_VERSION, T.UINT32),
        _kv(f"{arch}.context_length", int(config.get("max_position_embeddings", 2048)), T.UINT32),
        _kv(f"{arch}.embedding_length", hidden, T.UINT32),
        _kv(f"{arch}.block_count", int(config["num_hidden_layers"]), T.UINT32),
        _kv(f"{arch}.feed_forward_length", int(config["intermediate_size"]), T.UINT32),
        _kv(f"{arch}.rope.dimension_count", head_dim, T.UINT32),
        _kv(f"{arch}.attention.head_count", heads, T.UINT32),
        _kv(f"{arch}.attention.head_count_kv", int(config.get("num_key_value_heads") or heads), T.UINT32),
        _kv(f"{arch}.attention.layer_norm_rms_epsilon", float(config.get("rms_norm_eps", 1e-5)), T.FLOAT32),
        _kv(f"{arch}.rope.freq_base", float(config.get("rope_theta", 10000.0)), T.FLOAT32),
        _kv(f"{arch}.vocab_size", int(config["vocab_size"]), T.UINT32),
    ]
    if head_dim != hidden // heads:
        entries += [_kv(f"{arch}.attention.key_length", head_dim, T.UINT32),
                    _kv(f"{arch}.attention.value_length", head_dim, T.UINT32)]
    if license_name:
        entries.append(_kv("general.license", license_name, T.STRING))
    scaling = rope_scaling(config)
    if scaling:
        kind = scaling.get("type") or scaling.get("rope_type")
        if kind == "linear":
            entries += [_kv(f"{arch}.rope.scaling.type", "linear", T.STRING),
                        _kv(f"{arch}.rope.scaling.factor", float(scaling["factor"]), T.FLOAT32)]
        elif kind != "llama3":  # llama3's is the rope_freqs tensor (gguf_tensors)
            raise MlxDpoError(f"rope scaling {kind!r} is not supported for GGUF export (only linear and llama3)")
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


def gguf_family(config: dict) -> GgufFamily:
    """How llama.cpp reads this model_type, or one line naming the family it cannot be written for."""
    kind = config.get("model_type")
    family = GGUF_FAMILIES.get(kind)
    if family is None:
        raise MlxDpoError(
            f"{kind}: GGUF export supports the {', '.join(GGUF_FAMILIES)} families only; "
            "use --format hf and llama.cpp's convert_hf_to_gguf.py"
        )
    if "sliding_attention" in (config.get("layer_types") or []):
        raise MlxDpoError(f"{kind}: a model with sliding-window layers cannot be written as GGUF "
                          "(llama.cpp's llama architecture attends globally); use --format hf")
    return family


def check_family(model_folder: Path) -> dict:
    """The base's config, if llama.cpp can read its family (refused with one line otherwise)."""
    try:
        config = json.loads((model_folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{model_folder}: unreadable config.json ({e})") from None
    gguf_family(config)
    return config


def write_gguf(path: Path, entries: list[Entry], tensors: list[tuple[str, np.ndarray, Any]],
               arch: str = "llama") -> None:
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


def export_gguf(adapter_path: str | Path, out: str | Path, *, model: str | None = None, gguf_type: str = "f16",
                overwrite: bool = False, on_stage: Callable[[str], None] = no_stage) -> ExportResult:
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
    write_gguf(out, entries, tensors, gguf_family(fused.loaded.config).arch)
    return notes


def gguf_metadata(fused: FusedModel, gguf_type: str) -> tuple[list[Entry], list[str]]:
    folder = fused.loaded.path
    name = f"{fused.base_name} DPO"
    entries = llama_metadata(fused.loaded.config, name, gguf_type, base_license(folder))
    source = source_gguf(folder)
    if source is not None:
        return entries + copied_tokenizer(source), []
    tokenizer_entries, notes = built_tokenizer(folder, fused.loaded.config)
    return entries + tokenizer_entries, ["tokenizer metadata rebuilt from tokenizer.json (no source GGUF)", *notes]
