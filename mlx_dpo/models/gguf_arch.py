"""The architectures GGUF import and export know, each as llama.cpp lays it out and as mlx-lm runs it.

One table per architecture says how llama.cpp's converter (convert_hf_to_gguf.py) wrote the model, so that
import undoes exactly that and export does it again:

    tensor names   llama.cpp's `blk.N.<part>` -> mlx-lm's `model.layers.N.<path>`
    Q/K rows       llama.cpp's llama architecture interleaves each head's rotary pairs (`permute_qk`);
                   qwen2, qwen3, gemma3 and phi3 rotate halves (NEOX order), as mlx-lm does, so their rows stay
    norm weights   Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w (`norm_shift`)
    config         `<arch>.*` metadata -> the config.json keys mlx-lm's model class reads (`gguf_to_config`)

A file whose metadata asks for something the mlx-lm model cannot do (a rope scaling it lacks, Gemma 3 logit
soft-capping, Phi-3's long-context factors) is refused with one line: it would run, and be wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlx_dpo.errors import MlxDpoError

_LLAMA_LAYER = {
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
_QK_NORM = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Tensors llama.cpp derives from the metadata, or keeps for rope scaling; read into the config, not the weights.
ROPE_TENSORS = ("rope_freqs", "rope_factors_long", "rope_factors_short")


@dataclass(frozen=True)
class GgufArch:
    name: str  # general.architecture, and the prefix of its metadata keys
    model_type: str  # mlx-lm's (and transformers') model_type
    hf_class: str
    layer_names: Mapping[str, str]  # llama.cpp part -> mlx-lm path inside a block
    permute_qk: bool = False
    norm_shift: float = 0.0
    hidden_act: str = "silu"
    extra: Mapping[str, Any] = field(default_factory=dict)  # config keys the architecture always has

    def to_gguf(self) -> dict[str, str]:
        return {v: k for k, v in self.layer_names.items()}


_GEMMA3_LAYER = {
    **{k: v for k, v in _LLAMA_LAYER.items() if k not in ("attn_norm", "ffn_norm")},
    **_QK_NORM,
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_PHI3_LAYER = {
    "attn_qkv": "self_attn.qkv_proj",  # Phi-3 keeps Q, K and V in one matrix, and gate and up in another
    "attn_output": "self_attn.o_proj",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}

ARCHITECTURES: dict[str, GgufArch] = {
    "llama": GgufArch(
        "llama", "llama", "LlamaForCausalLM", _LLAMA_LAYER, permute_qk=True, extra={"rope_traditional": False}
    ),
    "qwen2": GgufArch("qwen2", "qwen2", "Qwen2ForCausalLM", _LLAMA_LAYER),
    "qwen3": GgufArch("qwen3", "qwen3", "Qwen3ForCausalLM", {**_LLAMA_LAYER, **_QK_NORM}),
    "gemma3": GgufArch(
        "gemma3", "gemma3_text", "Gemma3ForCausalLM", _GEMMA3_LAYER, norm_shift=1.0, hidden_act="gelu_pytorch_tanh"
    ),
    "phi3": GgufArch("phi3", "phi3", "Phi3ForCausalLM", _PHI3_LAYER),
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
# Gemma 3 as llama.cpp runs it: five sliding-window layers then one global, local rope base 10000, and
# queries scaled by 1/sqrt(head_dim) except in the 27B model (62 blocks), which uses hidden / heads.
GEMMA3_PATTERN, GEMMA3_LOCAL_ROPE_BASE, GEMMA3_27B_BLOCKS = 6, 10000.0, 62


def architecture_of(metadata: Mapping[str, Any], source: str) -> GgufArch:
    arch = metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise MlxDpoError(
            f"{source}: architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    return ARCHITECTURES[arch]


def gguf_to_config(metadata: Mapping[str, Any], tensors: Mapping[str, tuple[int, ...]], source: str) -> dict:
    """An mlx-lm/transformers `config.json` for the model a GGUF file describes (`tensors`: name -> shape)."""
    arch = architecture_of(metadata, source)
    meta = _Meta(metadata, arch.name, source)
    hidden, heads = int(meta.need("embedding_length")), int(meta.need("attention.head_count"))
    head_dim = int(meta.get("attention.key_length", hidden // heads))
    vocab_size = meta.get("vocab_size") or len(metadata["tokenizer.ggml.tokens"])
    config: dict[str, Any] = {
        "model_type": arch.model_type,
        "architectures": [arch.hf_class],
        "hidden_size": hidden,
        "intermediate_size": int(meta.need("feed_forward_length")),
        "num_hidden_layers": int(meta.need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(meta.get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": _f32(meta.get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.get("context_length", 2048)),
        "vocab_size": int(vocab_size),
        "tie_word_embeddings": "output.weight" not in tensors,
        "hidden_act": arch.hidden_act,
        **arch.extra,
    }
    rope_dims = int(meta.get("rope.dimension_count", head_dim))
    if arch.name == "phi3":
        config["partial_rotary_factor"] = rope_dims / head_dim
    elif rope_dims != head_dim:
        raise MlxDpoError(
            f"{source}: partial rotary embeddings ({rope_dims} of {head_dim}) are not supported for {arch.name}"
        )
    scaling = _rope_scaling(meta, tensors)
    if scaling is not None:
        config["rope_scaling"] = scaling
    if arch.name == "gemma3":
        config.update(_gemma3_config(meta, config))
    if arch.name == "phi3":
        config.update(_phi3_config(meta, tensors))
    for name, gguf_name in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        if f"tokenizer.ggml.{gguf_name}_token_id" in metadata:
            config[f"{name}_token_id"] = int(metadata[f"tokenizer.ggml.{gguf_name}_token_id"])
    return config


def _f32(value: Any) -> float:
    """A float32 metadata value as its shortest decimal (1e-06, not 9.999999974752427e-07): the value it was."""
    return float(str(np.float32(value)))


class _Meta:
    """`<arch>.<key>` metadata lookups, with one line naming a missing required field."""

    def __init__(self, metadata: Mapping[str, Any], arch: str, source: str) -> None:
        self.metadata, self.arch, self.source = metadata, arch, source

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.arch}.{key}", default)

    def need(self, key: str) -> Any:
        if f"{self.arch}.{key}" not in self.metadata:
            raise MlxDpoError(f"{self.source}: metadata field {self.arch}.{key} is missing")
        return self.metadata[f"{self.arch}.{key}"]


def _rope_scaling(meta: _Meta, tensors: Mapping[str, tuple[int, ...]]) -> dict | None:
    kind = meta.get("rope.scaling.type")
    if kind in (None, "none"):  # Llama 3's scaling is a tensor (rope_freqs): `llama3_rope_config` reads it
        return None
    if kind == "linear" and meta.arch != "phi3":
        return {"type": "linear", "factor": _f32(meta.need("rope.scaling.factor"))}
    raise MlxDpoError(
        f"{meta.source}: rope scaling {kind!r} ({meta.arch}.rope.scaling.type) is not supported for GGUF import"
    )


def llama3_rope_config(factors: np.ndarray, config: dict, source: str) -> dict:
    """Llama 3.1+'s rope scaling recovered from llama.cpp's `rope_freqs` tensor (one divisor per frequency).

    mlx-lm needs the rule's parameters, not the divisors: `factor` is the largest divisor, the low and high
    frequency factors are Meta's 1 and 4 (every Llama 3.1/3.2/3.3), and the original context follows from a
    divisor between 1 and `factor` (else 8192). The parameters are then checked against the tensor; anything
    else is refused, since running without the right scaling is silently wrong.
    """
    factor, low, high = float(np.max(factors)), 1.0, 4.0
    head_dim = int(config["head_dim"])
    wavelengths = 2 * np.pi * float(config["rope_theta"]) ** (np.arange(0, head_dim, 2) / head_dim)
    contexts = [8192.0]
    between = np.flatnonzero((factors > 1 + 1e-6) & (factors < factor - 1e-6))
    if factor > 1 and between.size:  # its smoothing weight s gives old_context / wavelength = low + s (high - low)
        s = (1 / factors[between[0]] - 1 / factor) / (1 - 1 / factor)
        contexts.insert(0, float(np.round(wavelengths[between[0]] * (low + s * (high - low)))))
    for context in contexts:
        scaling = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": int(context),
        }
        expected = llama3_rope_factors({**config, "rope_scaling": scaling})
        if expected is not None and expected.shape == factors.shape and np.allclose(expected, factors, rtol=1e-4):
            return scaling
    raise MlxDpoError(
        f"{source}: its rope_freqs tensor is not Llama 3's rope scaling (low/high frequency factors "
        "1 and 4); this rope scaling is not supported for GGUF import"
    )


def rope_scaling(config: dict) -> dict | None:
    """The config's rope scaling (transformers 5 nests it in rope_parameters), None when there is none."""
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or None
    kind = scaling and (scaling.get("rope_type") or scaling.get("type"))
    return None if kind in (None, "default") else scaling


def llama3_rope_factors(config: dict) -> np.ndarray | None:
    """Llama 3.1+'s rope scaling as llama.cpp reads it: one divisor per rotary frequency (`rope_freqs`).

    Frequencies whose wavelength is short against the original context stay, long ones are divided by
    `factor`, and the ones between move smoothly from one to the other (Meta's rule, as mlx-lm applies it).
    """
    scaling = rope_scaling(config)
    if not scaling or (scaling.get("rope_type") or scaling.get("type")) != "llama3":
        return None
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"]))
    base = float(config.get("rope_theta") or scaling.get("rope_theta") or 10000.0)
    factor, low, high = (
        float(scaling.get(k, d)) for k, d in (("factor", 8.0), ("low_freq_factor", 1.0), ("high_freq_factor", 4.0))
    )
    old_context = float(scaling.get("original_max_position_embeddings", 8192))
    wavelengths = 2 * np.pi * base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    smooth = np.clip((old_context / wavelengths - low) / (high - low), 0.0, 1.0)
    return (1.0 / ((1 - smooth) / factor + smooth)).astype(np.float32)


def _gemma3_config(meta: _Meta, config: dict) -> dict:
    if meta.get("final_logit_softcapping") or meta.get("attn_logit_softcapping"):
        raise MlxDpoError(
            f"{meta.source}: Gemma 3 with logit soft-capping is not supported (mlx-lm's gemma3_text model has none)"
        )
    layers = config["num_hidden_layers"]
    pattern = GEMMA3_PATTERN
    window = meta.get("attention.sliding_window")
    query_scale = (
        config["hidden_size"] // config["num_attention_heads"] if layers == GEMMA3_27B_BLOCKS else config["head_dim"]
    )
    layer_types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)]
    return {
        "sliding_window": int(window) if window else 4096,
        "sliding_window_pattern": pattern,
        "layer_types": layer_types,  # transformers 5 reads this; mlx-lm the pattern
        "rope_local_base_freq": _f32(meta.get("rope.freq_base_swa", GEMMA3_LOCAL_ROPE_BASE)),
        "query_pre_attn_scalar": query_scale,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
    }


def _phi3_config(meta: _Meta, tensors: Mapping[str, tuple[int, ...]]) -> dict:
    if "rope_factors_long.weight" in tensors or "rope_factors_short.weight" in tensors:
        raise MlxDpoError(
            f"{meta.source}: Phi-3's long-context rope scaling (rope_factors_long/short) is not "
            "supported for GGUF import; the 4k-context models are"
        )
    window = meta.get("attention.sliding_window")
    extra: dict[str, Any] = {"original_max_position_embeddings": int(meta.get("context_length", 4096))}
    if window:
        extra["sliding_window"] = int(window)
    return extra
