"""`mlx-dpo export`: a fused Hugging Face folder, a PEFT adapter and a GGUF file, each read back and checked.

A small random llama (the default model's tokenizer) carries an adapter trained for two steps; other
bases (quantized, another size, another architecture, the real default model) get adapters made
directly with random non-zero B. llama.cpp (llama-cpp-python) runs the GGUF files when it is installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import yaml
from helpers import assert_clean_error, bare_model, make_adapter, make_tiny_model_folder, run_cli, write_demo_pairs

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.export.fuse import fused_model
from mlx_dpo.export.gguf import export_gguf
from mlx_dpo.export.hf import export_hf
from mlx_dpo.export.peft import export_peft
from mlx_dpo.models.load import load_model
from mlx_dpo.names import DEFAULT_HUB_ID

PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "List 3 prime numbers: 2, 3 and"]
FP16_LOGPROB_TOL = 2e-2  # per token: float16 weights against the float32 base + adapter
NEAR_TIE = 2e-2  # logit gap below which float16 noise may pick either token
TINY_SEED = 21  # this module's `tiny` model (conftest.py)


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny) -> Path:
    """A LoRA adapter trained for two steps (large learning rate, so B is clearly non-zero)."""
    from mlx_dpo.api import train

    root = tmp_path_factory.mktemp("export-adapter")
    data = write_demo_pairs(root / "pairs.jsonl", 4)
    train(
        data,
        model=str(tiny),
        adapter_path=root / "adapter",
        iters=2,
        batch_size=2,
        lora_rank=4,
        learning_rate=1e-2,
        seed=5,
    )
    weights = mx.load(str(root / "adapter" / "adapters.safetensors"))
    assert all(mx.abs(v).max().item() > 1e-3 for k, v in weights.items() if k.endswith("lora_b"))
    return root / "adapter"


@pytest.fixture(scope="module")
def hf_export(tmp_path_factory, adapter) -> Path:
    """The dequantized HF export, through the CLI (the base comes from the adapter's config)."""
    out = tmp_path_factory.mktemp("hf") / "tiny-dpo"
    result = run_cli("export", "--adapter-path", str(adapter), "--out", str(out), "--dequantize")
    assert result.returncode == 0, result.stderr
    assert f"exported hf to {out}" in result.stdout
    return out


@pytest.fixture(scope="module")
def gguf_f16(tmp_path_factory, adapter, tiny) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "tiny-dpo-f16.gguf"
    result = export_gguf(adapter, out, model=str(tiny))
    assert any("rebuilt from tokenizer.json" in n for n in result.notes)
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny)


@pytest.fixture(scope="module")
def fused32(adapter):
    """Base + adapter fused in memory, float32 (before an export casts it)."""
    return fused_model(adapter, dequantize=True)


def as_float32(model: nn.Module) -> nn.Module:
    """Run float16 weights in float32: exact (fp16 -> fp32 loses nothing), and MLX's CPU backend has
    no fast float16 matmul. The comparisons are about the exported weights, not fp16 arithmetic."""
    model.set_dtype(mx.float32)
    return model


def chat_ids(tokenizer, prompt: str, answer: str = "") -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer.encode(text + answer, add_special_tokens=False)


def token_logps(model: nn.Module, ids: list[int]) -> np.ndarray:
    x = mx.array([ids])
    logits = model(x[:, :-1]).astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return np.array(mx.take_along_axis(logp, x[:, 1:, None], axis=-1)[0, :, 0])


def all_logits(model: nn.Module, ids: list[int]) -> np.ndarray:
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


def greedy(model: nn.Module, ids: list[int], n: int = 8) -> list[int]:
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([ids]), cache=cache)
    out: list[int] = []
    for _ in range(n):
        out.append(int(mx.argmax(logits[0, -1]).item()))
        logits = model(mx.array([out[-1:]]), cache=cache)
    return out


def agree_until_near_tie(
    reference_logits: np.ndarray, expected: list[int], got: list[int], tie: float = NEAR_TIE
) -> None:
    """`got` must equal `expected` (greedy tokens) up to the first step where the reference's top two logits
    are within float16 noise (`tie`); both continuations are right from there on."""
    assert len(got) == len(expected)
    for step, (e, g) in enumerate(zip(expected, got)):
        if e != g:
            assert _gap(reference_logits[step]) < tie, (step, expected, got)
            return


def _gap(logits: np.ndarray) -> float:
    top = np.sort(logits)[-2:]
    return float(top[1] - top[0])


def front_matter(readme: Path) -> tuple[dict, str]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


# --- 1. fused Hugging Face folder ---------------------------------------------------------------------------------


def test_fusion_in_float32_equals_base_plus_adapter(tiny, adapter, fused32, tokenizer):
    adapted = bare_model(str(tiny), adapter=adapter)  # mlx-lm's own adapter loader, unfused
    base = bare_model(str(tiny))
    assert fused32.fused_layers == 14  # 7 projections x 2 blocks
    assert not any(hasattr(m, "lora_a") for _, m in fused32.loaded.model.named_modules())
    assert fused32.loaded.model.model.layers[0].self_attn.q_proj.weight.dtype == mx.float32
    ids = chat_ids(tokenizer, PROMPTS[0], "Paris is the capital of France.")
    want = token_logps(adapted, ids)
    assert np.abs(want - token_logps(base, ids)).max() > 1e-2  # the adapter does change the model
    np.testing.assert_allclose(token_logps(fused32.loaded.model, ids), want, atol=1e-4, rtol=0)


def test_hf_export_loads_in_mlx_lm_and_matches_base_plus_adapter(tiny, adapter, hf_export):
    from mlx_lm import load

    model, tokenizer = load(str(hf_export))
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == mx.float16
    as_float32(model)
    adapted = bare_model(str(tiny), adapter=adapter)
    for prompt in PROMPTS:
        ids = chat_ids(tokenizer, prompt, "A short answer.")
        np.testing.assert_allclose(token_logps(model, ids), token_logps(adapted, ids), atol=FP16_LOGPROB_TOL, rtol=0)

    config = json.loads((hf_export / "config.json").read_text())
    assert "quantization" not in config and "quantization_config" not in config
    assert config["torch_dtype"] == "float16" and config["model_type"] == "llama"
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "model.safetensors",
        "README.md",
    ):
        assert (hf_export / name).is_file(), name
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert not list(hf_export.parent.glob(".*")), "temporary files left beside the export"
    # What transformers reads without torch: the config and the tokenizer; the weights' names are HF's.
    from safetensors import safe_open
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(hf_export)
    assert hf_config.model_type == "llama" and hf_config.tie_word_embeddings
    with safe_open(hf_export / "model.safetensors", "numpy") as f:
        assert f.metadata()["format"] == "pt"
        names = set(f.keys())
    assert {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.mlp.down_proj.weight"} <= names
    assert not any("lora" in n for n in names)


def test_hf_export_card_of_a_local_base(hf_export):
    meta, body = front_matter(hf_export / "README.md")
    assert meta["library_name"] == "mlx"
    assert {"dpo", "mlx", "mlx-dpo", "lora"} <= set(meta["tags"])
    assert "base_model" not in meta and "license" not in meta and "datasets" not in meta  # a local, unnamed base
    assert "| β (beta) | 0.1 |" in body and "| preference pairs | 4 |" in body
    assert "| LoRA rank | 4 |" in body and "## Final metrics (step 2)" in body
    assert "mlx_lm import load, generate" in body and "AutoModelForCausalLM" in body


def test_large_weights_are_sharded_with_the_hub_names_and_index(tmp_path, tiny):
    from mlx.utils import tree_flatten

    from mlx_dpo.export.hf import save_weights

    model = bare_model(str(tiny))
    save_weights(tmp_path, model, fmt="pt", max_shard_gb=0)  # a 0 GB limit: every tensor in a shard of its own
    weights = dict(tree_flatten(model.parameters()))
    n = len(weights)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard_names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    assert index["weight_map"] == dict(zip(sorted(weights), shard_names))
    assert index["metadata"] == {"total_size": sum(v.nbytes for v in weights.values())}
    assert sorted(p.name for p in tmp_path.glob("model*.safetensors")) == sorted(index["weight_map"].values())
    for name, shard in index["weight_map"].items():
        tensors, meta = mx.load(str(tmp_path / shard), return_metadata=True)
        assert list(tensors) == [name] and meta == {"format": "pt"}
        assert mx.array_equal(tensors[name], weights[name])


@pytest.fixture(scope="module")
def quantized_tiny(tmp_path_factory, tiny) -> Path:
    """The tiny model quantized to 4 bits the way mlx-lm's convert does, saved as a folder."""
    from mlx_lm.utils import load_model as mlx_load_model
    from mlx_lm.utils import quantize_model, save_config, save_model

    out = tmp_path_factory.mktemp("tiny-q4") / "tiny-q4"
    model, config = mlx_load_model(tiny)
    model, config = quantize_model(model, config, group_size=32, bits=4)
    save_model(out, model)
    save_config(config, out / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny / name, out / name)
    return out


def test_a_quantized_base_stays_quantized_unless_dequantized(tmp_path, quantized_tiny, tokenizer):
    ad = make_adapter(str(quantized_tiny), tmp_path / "adapter", seed=2, dequantize=False)
    kept = export_hf(ad, tmp_path / "kept")
    assert any("--dequantize" in note for note in kept.notes)
    config = json.loads((kept.path / "config.json").read_text())
    assert config["quantization"] == config["quantization_config"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    model = bare_model(str(kept.path))
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    _, body = front_matter(kept.path / "README.md")
    assert "transformers cannot load" in body
    # Re-quantizing the fused weights to 4 bits costs some accuracy: the export is much closer to
    # base + adapter than the base alone is.
    adapted = bare_model(str(quantized_tiny), adapter=ad)
    base = bare_model(str(quantized_tiny))
    ids = chat_ids(tokenizer, PROMPTS[1], "Rain on the roof.")
    want = token_logps(adapted, ids)
    assert np.abs(token_logps(model, ids) - want).mean() < 0.5 * np.abs(token_logps(base, ids) - want).mean()

    dense = export_hf(ad, tmp_path / "dense", dequantize=True)
    config = json.loads((dense.path / "config.json").read_text())
    assert "quantization" not in config and "quantization_config" not in config
    model = bare_model(str(dense.path))
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.Linear)
    adapted = bare_model(str(quantized_tiny), adapter=ad, dequantize=True)
    np.testing.assert_allclose(
        token_logps(as_float32(model), ids), token_logps(adapted, ids), atol=FP16_LOGPROB_TOL, rtol=0
    )


def test_default_model_export_card_names_base_license_and_dataset(tmp_path):
    # Two q_proj layers only: fusing into 4-bit layers is slow on the CPU backend, and the card is the point here.
    ad = make_adapter(
        None,
        tmp_path / "adapter",
        seed=4,
        dequantize=False,
        num_layers=2,
        keys=["self_attn.q_proj"],
        extra={"num_pairs": 37, "beta": 0.25, "dataset": "someone/preferences"},
    )
    result = export_hf(ad, tmp_path / "smol-dpo")  # base: the adapter's, the embedded default
    meta, body = front_matter(result.path / "README.md")
    assert meta["base_model"] == DEFAULT_HUB_ID
    assert meta["library_name"] == "mlx"
    assert meta["license"] == "apache-2.0"  # from the source GGUF's general.license
    assert meta["datasets"] == ["someone/preferences"]
    assert {"dpo", "mlx", "mlx-dpo", "lora"} <= set(meta["tags"])
    assert "| β (beta) | 0.25 |" in body and "| preference pairs | 37 |" in body
    assert "| LoRA layers | the last 2 blocks |" in body and "self_attn.q_proj" in body
    config = json.loads((result.path / "config.json").read_text())
    assert config["quantization"]["group_size"] == 32  # kept: no --dequantize
    assert "chat_template" in json.loads((result.path / "tokenizer_config.json").read_text())


def test_card_license_and_base_id_from_a_folder(tmp_path):
    from mlx_dpo.export.base import hub_id
    from mlx_dpo.export.card import base_license

    folder = tmp_path / "hub" / "models--someone--base-model" / "snapshots" / "0123abc"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# base\n")
    assert base_license(folder) == "mit"  # the base folder's own model card
    assert hub_id(str(folder), folder) == "someone/base-model"  # a folder in the Hugging Face cache
    assert hub_id("someone/other", folder) == "someone/other"  # a repo id as given
    assert hub_id(str(tmp_path), tmp_path) is None and base_license(tmp_path) is None


# --- 2. PEFT ------------------------------------------------------------------------------------------------------


def test_peft_tensors_reproduce_the_mlx_lora_update(tmp_path, adapter, tiny):
    result = export_peft(adapter, tmp_path / "peft")
    config = json.loads((result.path / "adapter_config.json").read_text())
    mlx_config = json.loads((adapter / "adapter_config.json").read_text())
    scale, rank = mlx_config["lora_parameters"]["scale"], mlx_config["lora_parameters"]["rank"]
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["r"] == rank == 4 and config["lora_alpha"] == scale * rank == 16
    assert config["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert "layers_to_transform" not in config  # every block was adapted
    assert config["base_model_name_or_path"] == str(tiny)
    assert (config["bias"], config["fan_in_fan_out"], config["use_dora"]) == ("none", False, False)

    peft = mx.load(str(result.path / "adapter_model.safetensors"))
    ours = mx.load(str(adapter / "adapters.safetensors"))
    modules = sorted({k.rpartition(".")[0] for k in ours})
    assert len(peft) == 2 * len(modules) == 28
    for module in modules:
        a, b = np.array(ours[f"{module}.lora_a"]), np.array(ours[f"{module}.lora_b"])
        A = np.array(peft[f"base_model.model.{module}.lora_A.weight"])
        B = np.array(peft[f"base_model.model.{module}.lora_B.weight"])
        assert A.dtype == B.dtype == np.float32
        assert A.shape == (rank, a.shape[0]) and B.shape == (b.shape[1], rank)
        peft_delta = config["lora_alpha"] / config["r"] * (B @ A)
        np.testing.assert_allclose(peft_delta, scale * (a @ b).T, rtol=1e-6, atol=1e-8)


def test_peft_config_of_a_partial_adapter_and_dora_refused(tmp_path, tiny):
    partial = make_adapter(str(tiny), tmp_path / "partial", num_layers=1, keys=["self_attn.q_proj", "self_attn.v_proj"])
    config = json.loads((export_peft(partial, tmp_path / "peft").path / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_proj", "v_proj"]
    assert config["layers_to_transform"] == [1]  # the last of 2 blocks
    assert config["lora_alpha"] == 8

    dora = make_adapter(str(tiny), tmp_path / "dora", dora=True)
    with pytest.raises(MlxDpoError, match="DoRA adapter cannot be exported for PEFT"):
        export_peft(dora, tmp_path / "peft-dora")
    assert not (tmp_path / "peft-dora").exists()
    # DoRA fuses fine into a full model.
    fused = fused_model(dora, dequantize=True)
    adapted = bare_model(str(tiny), adapter=dora)
    ids = chat_ids(fused.loaded.tokenizer, PROMPTS[2], "5")
    np.testing.assert_allclose(token_logps(fused.loaded.model, ids), token_logps(adapted, ids), atol=1e-4, rtol=0)


# --- 3. GGUF ------------------------------------------------------------------------------------------------------


def gguf_contents(path: Path) -> tuple[dict, dict]:
    """Tensors and metadata as MLX reads them (the `gguf` package's reader takes seconds on a 49k vocabulary)."""
    weights, metadata = mx.load(str(path), return_metadata=True)
    plain = {k: (v.tolist() if isinstance(v, mx.array) else v) for k, v in metadata.items()}
    return weights, plain


def test_gguf_metadata_and_tensors(gguf_f16, tiny, hf_export):
    import gguf

    weights, fields = gguf_contents(gguf_f16)
    config = json.loads((tiny / "config.json").read_text())
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert fields["llama.embedding_length"] == 64 and fields["llama.block_count"] == 2
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.dimension_count"] == 16 and fields["llama.feed_forward_length"] == 128
    assert fields["llama.rope.freq_base"] == pytest.approx(config["rope_theta"])
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    assert fields["llama.context_length"] == config["max_position_embeddings"]
    assert fields["llama.vocab_size"] == len(fields["tokenizer.ggml.tokens"]) == config["vocab_size"]
    assert fields["tokenizer.ggml.pre"] == "smollm" and fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.bos_token_id"] == 1 and fields["tokenizer.ggml.eos_token_id"] == 2
    assert fields["tokenizer.ggml.tokens"][2] == "<|im_end|>" and fields["tokenizer.ggml.token_type"][2] == 3
    assert fields["tokenizer.ggml.merges"][0] == "Ġ t"
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    assert "output.weight" not in weights  # tied embeddings
    assert weights["blk.1.attn_q.weight"].dtype == mx.float16
    assert weights["blk.1.attn_norm.weight"].dtype == mx.float32
    assert len(weights) == 2 + 2 * 9
    # Q and K rows are in llama.cpp's order: un-permuted, they are the HF export's fused rows, bit for bit.
    from mlx_dpo.models.gguf import unpermute_rows

    hf = mx.load(str(hf_export / "model.safetensors"))
    for layer in range(2):
        q, k = weights[f"blk.{layer}.attn_q.weight"], weights[f"blk.{layer}.attn_k.weight"]
        assert not mx.array_equal(q, hf[f"model.layers.{layer}.self_attn.q_proj.weight"])
        assert mx.array_equal(unpermute_rows(q, 4), hf[f"model.layers.{layer}.self_attn.q_proj.weight"])
        assert mx.array_equal(unpermute_rows(k, 2), hf[f"model.layers.{layer}.self_attn.k_proj.weight"])
        assert mx.array_equal(weights[f"blk.{layer}.ffn_down.weight"], hf[f"model.layers.{layer}.mlp.down_proj.weight"])


def test_gguf_read_back_by_mlx_dpo_gives_the_fused_model_answers(gguf_f16, hf_export, tokenizer):
    fused = as_float32(bare_model(str(hf_export)))
    back = load_model(str(gguf_f16))  # converted again by mlx-dpo's own GGUF loader
    # The F16 file runs in fp32 on MLX's CPU backend (half precision is several times slower there).
    expected = mx.float32 if mx.default_device() == mx.cpu else mx.float16
    assert back.model.model.layers[0].self_attn.q_proj.weight.dtype == expected
    as_float32(back.model)
    for prompt in PROMPTS[:2]:
        ids = chat_ids(tokenizer, prompt)
        assert back.tokenizer.encode(prompt) == tokenizer.encode(prompt)
        expected = greedy(fused, ids)
        got = greedy(back.model, ids)
        logits = all_logits(fused, ids + expected)[len(ids) - 1 :]
        agree_until_near_tie(logits, expected, got)
        np.testing.assert_allclose(
            all_logits(back.model, ids + expected)[len(ids) - 1 :], logits, atol=NEAR_TIE, rtol=0
        )


def test_llama_cpp_runs_the_gguf_like_mlx(gguf_f16, fused32, tokenizer):
    import llama_cpp  # a dev dependency (pyproject.toml): missing, this fails rather than skips

    model = fused32.loaded.model  # float32, in memory
    llm = llama_cpp.Llama(model_path=str(gguf_f16), n_ctx=256, verbose=False, logits_all=True)
    for prompt in PROMPTS:
        ids = chat_ids(tokenizer, prompt)
        # llama.cpp tokenizes like the MLX tokenizer (the 'smollm' pre-tokenizer: digits one by one).
        assert llm.tokenize(tokenizer.decode(ids).encode(), add_bos=False, special=True) == ids
        expected = greedy(model, ids)
        llm.reset()
        got = []
        for token in llm.generate(ids, temp=0.0, top_k=1):
            got.append(token)
            if len(got) == len(expected):
                break
        reference = all_logits(model, ids + expected)
        agree_until_near_tie(reference[len(ids) - 1 :], expected, got)
        # Teacher-forced on the MLX answer, llama.cpp's logits match MLX's at every position.
        llm.reset()
        llm.eval(ids + expected)
        np.testing.assert_allclose(np.array(llm.scores[: len(ids) + len(expected)]), reference, atol=NEAR_TIE, rtol=0)


@pytest.mark.slow
def test_llama_cpp_runs_the_default_model_export_like_mlx(tmp_path):
    """The real default model (9 query / 3 key-value heads, the tokenizer copied from its GGUF) through llama.cpp."""
    import llama_cpp  # a dev dependency (pyproject.toml): missing, this fails rather than skips

    from mlx_dpo.export.gguf import write_fused_gguf

    ad = make_adapter(None, tmp_path / "adapter", seed=4, alpha=2.0)
    # export_gguf's own two steps, keeping the fused float32 model to compare with (dequantizing the
    # default model twice would double this test's time).
    fused = fused_model(ad, dequantize=True)
    out = tmp_path / "smol-dpo-f16.gguf"
    assert write_fused_gguf(fused, out) == []  # tokenizer copied from the source GGUF, not rebuilt
    model, tokenizer = fused.loaded.model, fused.loaded.tokenizer
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=512, verbose=False, logits_all=True)
    for prompt in PROMPTS[:2]:
        ids = chat_ids(tokenizer, prompt)
        assert llm.tokenize(tokenizer.decode(ids).encode(), add_bos=False, special=True) == ids
        expected = greedy(model, ids)
        llm.reset()
        got = []
        for token in llm.generate(ids, temp=0.0, top_k=1):
            got.append(token)
            if len(got) == len(expected):
                break
        reference = all_logits(model, ids + expected)
        # float16 weights against float32 ones, logits of magnitude ~40: 0.25 is about 0.6 %.
        agree_until_near_tie(reference[len(ids) - 1 :], expected, got, tie=0.25)
        llm.reset()
        llm.eval(ids + expected)
        np.testing.assert_allclose(np.array(llm.scores[: len(ids) + len(expected)]), reference, atol=0.25, rtol=0)


def test_q8_0_gguf_loads_and_runs(tmp_path, adapter, tiny, fused32, tokenizer):
    import gguf

    out = export_gguf(adapter, tmp_path / "tiny-q8_0.gguf", model=str(tiny), gguf_type="q8_0").path
    weights, fields = gguf_contents(out)
    assert fields["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    # MLX reads Q8_0 tensors as 8-bit quantized triples (weight, scales, biases).
    for name in ("blk.0.ffn_down", "blk.1.attn_q", "token_embd"):
        assert f"{name}.scales" in weights and weights[f"{name}.weight"].dtype == mx.uint32, name
    assert weights["blk.0.attn_norm.weight"].dtype == mx.float32
    back = load_model(str(out))  # dequantized to float32 on the CPU backend
    ids = chat_ids(tokenizer, PROMPTS[0], "Paris.")
    diff = np.abs(token_logps(back.model, ids) - token_logps(fused32.loaded.model, ids))
    assert np.isfinite(diff).all() and diff.mean() < 0.05


def test_gguf_of_a_gguf_base_copies_its_tokenizer(tmp_path):
    import gguf
    from gguf_fixtures import random_llama_weights, write_llama_gguf

    source = tmp_path / "tiny-source.gguf"
    write_llama_gguf(source, random_llama_weights(seed=3, tied=False))
    ad = make_adapter(str(source), tmp_path / "adapter", seed=6)
    out = export_gguf(ad, tmp_path / "out.gguf").path  # the base: the GGUF file the adapter names

    def tokenizer_fields(path):
        reader = gguf.GGUFReader(str(path))
        fields = reader.fields.items()
        return {k: (f.contents(), [int(t) for t in f.types]) for k, f in fields if k.startswith("tokenizer.")}

    assert tokenizer_fields(out) == tokenizer_fields(source)
    assert "output.weight" in {t.name for t in gguf.GGUFReader(str(out)).tensors}  # untied: lm_head kept
    fused = fused_model(ad, dequantize=True).loaded
    back = load_model(str(out))
    ids = fused.tokenizer.encode(" the quick brown fox and")
    np.testing.assert_allclose(all_logits(back.model, ids), all_logits(fused.model, ids), atol=NEAR_TIE, rtol=0)


# --- 4. bad input: one clear line, exit 2, nothing written ----------------------------------------------------------


def _nothing_beside(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "temporary files left behind"


def test_export_of_a_missing_adapter(tmp_path):
    out = tmp_path / "out"
    result = run_cli("export", "--adapter-path", str(tmp_path / "nope"), "--out", str(out))
    assert result.returncode == 2
    assert_clean_error(result, "adapter folder not found")
    _nothing_beside(out)


def test_export_of_an_adapter_from_another_base(tmp_path, tiny, default_model_path):
    small = make_tiny_model_folder(tmp_path / "small", default_model_path, hidden=32, seed=1)
    ad = make_adapter(str(small), tmp_path / "adapter")
    out = tmp_path / "out"
    result = run_cli("export", "--adapter-path", str(ad), "--model", str(tiny), "--out", str(out), "--dequantize")
    assert result.returncode == 2
    assert_clean_error(result, "adapter does not fit", "trained on", str(small), "--model")
    _nothing_beside(out)
    # The embedded default (hidden size 576) is refused the same way, for PEFT too.
    with pytest.raises(MlxDpoError, match="adapter does not fit"):
        export_peft(ad, out, model="default")
    _nothing_beside(out)


def test_export_into_a_non_empty_folder_needs_overwrite(tmp_path, adapter):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("export", "--adapter-path", str(adapter), "--out", str(out), "--format", "peft")
    assert result.returncode == 2
    assert_clean_error(result, "not empty", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    export_peft(adapter, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # Never over the adapter being read.
    with pytest.raises(MlxDpoError, match="which this export reads"):
        export_peft(adapter, adapter, overwrite=True)


# Other families, and the ones GGUF export refuses: tests/test_family_exports.py.


def test_a_failure_mid_export_leaves_nothing(tmp_path, adapter, monkeypatch):
    import mlx_dpo.export.hf as export

    def broken(folder, *args, **kwargs):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "save_weights", broken)
    out = tmp_path / "out"
    with pytest.raises(MlxDpoError, match="No space left on device"):
        export_hf(adapter, out, dequantize=True)
    _nothing_beside(out)


def test_an_adapter_whose_base_is_gone_needs_model(tmp_path, adapter):
    moved = tmp_path / "adapter"
    shutil.copytree(adapter, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model"] = str(tmp_path / "deleted-model")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(MlxDpoError, match="pass its base model with --model"):
        export_hf(moved, tmp_path / "out")
