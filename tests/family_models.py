"""Tiny random-weight models of the mlx-lm families people bring, built from mlx-lm's own classes.

Each family is a config dict (`family_config`) that mlx-lm's `ModelArgs.from_dict` reads; the model is
`mlx_lm.models.<module>.Model` (through mlx-lm's own model-type remapping, e.g. mistral -> llama).
The numbers are chosen so family differences show on short test sequences: sliding windows of 5
tokens (shorter than the probes and test sequences), a gemma2 final soft-cap of 3 (the random logits
reach it), cohere's and granite's logit scales far from 1, grouped-query attention everywhere.

`make_family_model` builds one in memory (fast; the log-prob tests use it); `make_family_folder`
writes mlx-lm's folder layout (config.json, model.safetensors, the default model's tokenizer files)
for tests that load from disk (CLI, exports).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

VOCAB = 49152  # the default model's tokenizer
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 32, 4, 2, 8, 2
WINDOW = 5  # sliding windows shorter than the test sequences, so a window bug shows

_COMMON: dict[str, Any] = dict(
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    intermediate_size=2 * HIDDEN,
    num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS,
    head_dim=HEAD_DIM,
    rms_norm_eps=1e-5,
    vocab_size=VOCAB,
    max_position_embeddings=2048,
    rope_theta=10000.0,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)

# family -> (model_type, HF architecture, what differs from _COMMON)
_FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("llama", "LlamaForCausalLM", dict(tie_word_embeddings=True)),
    "llama_untied": ("llama", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    "qwen2": ("qwen2", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "qwen3": ("qwen3", "Qwen3ForCausalLM", dict(tie_word_embeddings=False)),
    "qwen2_moe": (
        "qwen2_moe",
        "Qwen2MoeForCausalLM",
        dict(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=HIDDEN,
            shared_expert_intermediate_size=HIDDEN,
            tie_word_embeddings=False,
        ),
    ),
    "mixtral": (
        "mixtral",
        "MixtralForCausalLM",
        dict(num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False),
    ),
    "gemma": ("gemma", "GemmaForCausalLM", dict()),
    "gemma2": (
        "gemma2",
        "Gemma2ForCausalLM",
        dict(final_logit_softcapping=3.0, attn_logit_softcapping=10.0, query_pre_attn_scalar=HEAD_DIM),
    ),
    # layer 0 slides over WINDOW tokens, layer 1 is global (pattern 2)
    "gemma3_text": (
        "gemma3_text",
        "Gemma3ForCausalLM",
        dict(sliding_window=WINDOW, sliding_window_pattern=2, query_pre_attn_scalar=HEAD_DIM),
    ),
    "phi3": ("phi3", "Phi3ForCausalLM", dict(tie_word_embeddings=False)),
    # mlx-lm runs mistral as llama; per-layer types make layer 0 a sliding-window layer
    "mistral": (
        "mistral",
        "MistralForCausalLM",
        dict(sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=False),
    ),
    "cohere": ("cohere", "CohereForCausalLM", dict(logit_scale=0.25, layer_norm_eps=1e-5)),
    "granite": (
        "granite",
        "GraniteForCausalLM",
        dict(
            logits_scaling=4.0,
            attention_multiplier=0.2,
            embedding_multiplier=4.0,
            residual_multiplier=0.5,
            attention_bias=False,
            mlp_bias=False,
            tie_word_embeddings=True,
        ),
    ),
    "olmo2": ("olmo2", "Olmo2ForCausalLM", dict(tie_word_embeddings=False)),
    "smollm3": ("smollm3", "SmolLM3ForCausalLM", dict(no_rope_layer_interval=2, tie_word_embeddings=True)),
}

FAMILIES: list[str] = list(_FAMILIES)


def family_config(family: str, **overrides: Any) -> dict[str, Any]:
    """The config.json of a tiny `family` model (`overrides` replace or add keys)."""
    model_type, architecture, extra = _FAMILIES[family]
    return {"model_type": model_type, "architectures": [architecture], **_COMMON, **extra, **overrides}


def make_family_model(family: str, seed: int = 0, **overrides: Any):
    """A tiny random `family` model in memory, from mlx-lm's own classes (evaluated, in eval mode)."""
    import mlx.core as mx
    from mlx_lm.utils import _get_classes

    config = family_config(family, **overrides)
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    mx.eval(model.parameters())
    model.eval()
    return model


def make_family_folder(family: str, out: Path, tokenizer_from: Path, seed: int = 0, **overrides: Any) -> Path:
    """A tiny random `family` model in mlx-lm's folder layout, with the tokenizer files of `tokenizer_from`."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    model = make_family_model(family, seed, **overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(family_config(family, **overrides), indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(tokenizer_from) / name).exists():
            shutil.copy(Path(tokenizer_from) / name, out / name)
    return out
