"""Convert a llama-architecture GGUF file into an mlx-lm model folder.

`mx.load` reads GGUF natively: Q4_0, Q4_1 and Q8_0 tensors arrive as MLX quantized triples
(weight, scales, biases; group size 32), F16/F32 as plain arrays. What is left to do here is
naming, undoing llama.cpp's rotary row permutation of Q and K, a config.json from the metadata,
and a `tokenizers` tokenizer rebuilt from the embedded vocabulary and merges.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_dpo.atomic import atomic_directory
from mlx_dpo.errors import MlxDpoError

SUPPORTED_ARCHITECTURES = ("llama",)
CONTROL_TOKEN = 3  # tokenizer.ggml.token_type value of control tokens such as <|im_start|>
USER_DEFINED_TOKEN = 4
SOURCE_FILE = "mlx_dpo_source.json"  # in a converted folder: the GGUF file it came from

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# llama.cpp pre-tokenizer names -> split regex applied before byte-level BPE. None: GPT-2's.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS: dict[str, tuple[bool, str | None]] = {
    # name: (split digits one by one, custom split regex)
    "default": (False, None),
    "gpt2": (False, None),
    "gpt-2": (False, None),
    "smollm": (True, None),
    "starcoder": (True, None),
    "llama-bpe": (False, _LLAMA3_SPLIT),
    "llama3": (False, _LLAMA3_SPLIT),
}


def read_gguf(path: str | Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Weights and metadata of a GGUF file, with a clear error for a missing, damaged or foreign file."""
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
    try:
        weights, metadata = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError) as e:
        detail = str(e).replace("[load_gguf] ", "")
        raise MlxDpoError(f"{path}: damaged or truncated GGUF file ({detail})") from None
    return weights, {k: _plain(v) for k, v in metadata.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, mx.array):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def gguf_to_config(metadata: dict[str, Any], weights: dict[str, mx.array], source: str) -> dict:
    """An mlx-lm/transformers `config.json` for the model described by GGUF metadata."""
    arch = metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise MlxDpoError(
            f"{source}: architecture {arch!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )

    def need(key: str) -> Any:
        if f"{arch}.{key}" not in metadata:
            raise MlxDpoError(f"{source}: metadata field {arch}.{key} is missing")
        return metadata[f"{arch}.{key}"]

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = int(metadata.get(f"{arch}.attention.key_length", hidden // heads))
    rope_dims = int(metadata.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise MlxDpoError(f"{source}: partial rotary embeddings ({rope_dims} of {head_dim}) are not supported")
    vocab_size = metadata.get(f"{arch}.vocab_size") or len(metadata["tokenizer.ggml.tokens"])
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(metadata.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(metadata.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(metadata.get(f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(metadata.get(f"{arch}.context_length", 2048)),
        "vocab_size": int(vocab_size),
        "tie_word_embeddings": "output.weight" not in weights,
        "rope_traditional": False,
        "hidden_act": "silu",
    }
    if metadata.get(f"{arch}.rope.scaling.type") == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": float(metadata[f"{arch}.rope.scaling.factor"])}
    for name, gguf_name in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        if f"tokenizer.ggml.{gguf_name}_token_id" in metadata:
            config[f"{name}_token_id"] = int(metadata[f"tokenizer.ggml.{gguf_name}_token_id"])
    if any(k.endswith(".scales") for k in weights):
        # Every GGUF type that mx.load keeps packed uses groups of 32; bits vary per tensor and
        # mlx-lm infers them from each tensor's shape.
        config["quantization"] = {"group_size": 32, "bits": _bits_of_first_quantized(weights)}
    return config


def _bits_of_first_quantized(weights: dict[str, mx.array]) -> int:
    for key, scales in weights.items():
        if key.endswith(".scales"):
            packed = weights[key[: -len(".scales")] + ".weight"]
            return packed.shape[-1] * 32 // (scales.shape[-1] * 32)
    raise ValueError("no quantized tensor")


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


def gguf_to_mlx_weights(weights: dict[str, mx.array], config: dict) -> dict[str, mx.array]:
    """Rename GGUF tensors to mlx-lm's llama names and un-permute Q and K."""
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        stem, _, kind = key.rpartition(".")  # kind: weight, scales or biases
        match = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
        if match:
            layer, part = match.groups()
            if part not in _LAYER_NAMES:
                continue  # e.g. rope_freqs: recomputed by mlx-lm
            if part == "attn_q":
                value = unpermute_rows(value, config["num_attention_heads"])
            elif part == "attn_k":
                value = unpermute_rows(value, config["num_key_value_heads"])
            out[f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"] = value
        elif stem in _TOP_NAMES:
            out[f"{_TOP_NAMES[stem]}.{kind}"] = value
    return out


def build_tokenizer_files(metadata: dict[str, Any], source: str) -> dict[str, dict]:
    """`tokenizer.json` and `tokenizer_config.json` contents for a GGUF byte-level BPE vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise MlxDpoError(
            f"{source}: tokenizer type {kind!r} is not supported (only byte-level BPE, 'gpt2')"
        )
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    pre_name = metadata.get("tokenizer.ggml.pre", "default")
    if pre_name not in _PRE_TOKENIZERS:
        raise MlxDpoError(f"{source}: pre-tokenizer {pre_name!r} is not supported")
    split_digits, split_regex = _PRE_TOKENIZERS[pre_name]

    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    steps = []
    if split_digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    if split_regex:
        from tokenizers import Regex

        steps.append(pre_tokenizers.Split(Regex(split_regex), behavior="isolated"))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_regex is None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, ty in zip(tokens, types)
            if ty in (CONTROL_TOKEN, USER_DEFINED_TOKEN)
        ]
    )

    def token(name: str) -> str | None:
        idx = metadata.get(f"tokenizer.ggml.{name}_token_id")
        return tokens[int(idx)] if idx is not None and int(idx) < len(tokens) else None

    bos, eos = token("bos"), token("eos")
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    if add_bos or add_eos:
        # transformers ignores tokenizer_config's add_bos_token/add_eos_token when a tokenizer.json
        # exists: the post-processor itself has to add them, as llama.cpp does.
        single = [bos] * add_bos + ["$A"] + [eos] * add_eos
        pair = single + [bos] * add_bos + ["$B:1"] + [eos] * add_eos
        specials = [(bos, int(metadata["tokenizer.ggml.bos_token_id"]))] * add_bos
        specials += [(eos, int(metadata["tokenizer.ggml.eos_token_id"]))] * (add_eos and eos != bos)
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials),
            ]
        )

    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding") or token("eos"),
        "unk_token": token("unknown"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(metadata.get("llama.context_length", 2048)),
    }
    if "tokenizer.chat_template" in metadata:
        tokenizer_config["chat_template"] = metadata["tokenizer.chat_template"]
    return {"tokenizer.json": json.loads(tok.to_str()), "tokenizer_config.json": tokenizer_config}


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
    config = gguf_to_config(metadata, weights, source)
    tokenizer_files = build_tokenizer_files(metadata, source)
    mlx_weights = gguf_to_mlx_weights(weights, config)
    expected = "model.layers.{}.self_attn.q_proj.weight"
    missing = [i for i in range(config["num_hidden_layers"]) if expected.format(i) not in mlx_weights]
    if missing or "model.embed_tokens.weight" not in mlx_weights:
        raise MlxDpoError(f"{source}: tensors missing for layers {missing[:5]} or the embedding")
    generation_config = {
        k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config
    }
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


def _write_model_folder(out_dir: Path, weights: dict[str, mx.array], files: dict[str, Any]) -> None:
    with atomic_directory(out_dir) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
