"""Exports of every family people bring: fused HF folders mlx-lm reloads exactly, PEFT adapters with transformers'
module names, GGUF files llama.cpp runs (llama, mistral, qwen2, qwen3) and one clear refusal for the rest.

Each family is a tiny random model from mlx-lm's own classes (tests/family_models.py) carrying an adapter with
random non-zero LoRA B, with a small local tokenizer (tests/chat_tokenizers.py: loading the default model's
49k-token one would take most of each test). The PEFT side is checked against the linear layers of transformers' own
class of the family, built tiny from the same config (a table made with PyTorch by
tests/fixtures/transformers_layers.py: the test environment has no PyTorch).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import numpy as np
import pytest
from chat_tokenizers import VOCAB_SIZE, make_chat_tokenizer
from family_models import FAMILIES, family_config, make_family_folder
from helpers import assert_clean_error, bare_model, make_adapter, run_cli
from mlx.utils import tree_map

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.export.hf import export_hf
from mlx_dpo.export.peft import check_peft_family, export_peft

MOE = ("qwen2_moe", "mixtral")
IDS = [1, *range(300, 324)]  # 25 tokens: longer than the families' sliding windows
LOGPROB_TOL = 1e-4  # per token: a float32 base exported as float32 is the fused model exactly


def token_logps(model, ids: list[int]) -> np.ndarray:
    x = mx.array([ids])
    logits = model(x[:, :-1]).astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return np.array(mx.take_along_axis(logp, x[:, 1:, None], axis=-1)[0, :, 0])


@pytest.fixture(scope="module")
def family_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def small_tokenizer(family_root) -> Path:
    return make_chat_tokenizer("qwen2", family_root / "tokenizer")


def family_folder(root: Path, family: str, tokenizer_from: Path, **overrides) -> Path:
    """A tiny `family` base declared float32 (so its HF export is float32 too), built once per module."""
    name = family + "".join(f"-{k}" for k in overrides)
    folder = root / name
    if not (folder / "config.json").is_file():
        make_family_folder(family, folder, tokenizer_from, torch_dtype="float32", vocab_size=VOCAB_SIZE, **overrides)
    return folder


def family_adapter(root: Path, family: str, folder: Path, keys: list[str] | None = None) -> Path:
    out = root / f"{folder.name}-adapter{'-' + '-'.join(keys) if keys else ''}"
    if not (out / "adapter_config.json").is_file():
        make_adapter(str(folder), out, rank=2, alpha=4.0, seed=3, keys=keys)
    return out


# --- fused Hugging Face folders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_fused_export_reloads_with_mlx_lm_and_gives_base_plus_adapter_logprobs(
    family, family_root, small_tokenizer, tmp_path
):
    from mlx_lm import load

    folder = family_folder(family_root, family, small_tokenizer)
    adapter = family_adapter(family_root, family, folder)
    adapted = token_logps(bare_model(str(folder), adapter=adapter), IDS)  # mlx-lm's own adapter loader, unfused
    assert np.abs(adapted - token_logps(bare_model(str(folder)), IDS)).max() > 1e-3  # the adapter matters

    result = export_hf(adapter, tmp_path / "fused", dequantize=True)
    model, tokenizer = load(str(result.path))
    config = json.loads((result.path / "config.json").read_text())
    assert config["model_type"] == family_config(family)["model_type"] and config["torch_dtype"] == "float32"
    assert not any(hasattr(m, "lora_a") for _, m in model.named_modules())
    np.testing.assert_allclose(token_logps(model, IDS), adapted, atol=LOGPROB_TOL, rtol=0)
    assert tokenizer.eos_token_id is not None
    assert any("switch_mlp" in note for note in result.notes) is (family in MOE)  # transformers cannot read those


def test_a_base_declared_bfloat16_is_exported_bfloat16_though_loaded_float32(family_root, small_tokenizer, tmp_path):
    folder = make_family_folder("qwen2", tmp_path / "bf16", small_tokenizer, torch_dtype="bfloat16")
    adapter = make_adapter(str(folder), tmp_path / "adapter", rank=2)
    result = export_hf(adapter, tmp_path / "fused", dequantize=True)
    assert json.loads((result.path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert mx.load(str(result.path / "model.safetensors"))["model.norm.weight"].dtype == mx.bfloat16


# --- PEFT ----------------------------------------------------------------------------------------------------------


TRANSFORMERS_LAYERS = Path(__file__).parent / "fixtures" / "transformers_layers.json"


def transformers_linear_layers(family: str) -> dict[str, list[int]]:
    """{module path: [in, out]} of the linear layers of transformers' own class of `family`, built tiny from the
    same config (tests/fixtures/transformers_layers.py makes the table with PyTorch, which tests do not carry)."""
    import sys

    sys.path.insert(0, str(TRANSFORMERS_LAYERS.parent))
    from transformers_layers import config_digest

    entry = json.loads(TRANSFORMERS_LAYERS.read_text())["families"][family]
    assert entry["config"] == config_digest(family_config(family)), (
        f"{TRANSFORMERS_LAYERS.name} is stale for {family}: run tests/fixtures/transformers_layers.py"
    )
    return entry["linear"]


def check_peft_adapter_on_transformers(family: str, peft_dir: Path) -> int:
    """Every exported tensor names a linear layer of transformers' model, by PEFT's key layout, with matching
    shapes; returns the number of adapted layers."""
    from safetensors.numpy import load_file

    linear = transformers_linear_layers(family)
    tensors = load_file(peft_dir / "adapter_model.safetensors")
    r = json.loads((peft_dir / "adapter_config.json").read_text())["r"]
    for key, value in tensors.items():
        assert key.startswith("base_model.model.") and key.endswith((".lora_A.weight", ".lora_B.weight")), key
        path, kind = key.removeprefix("base_model.model.").rsplit(".", 2)[:2]
        assert path in linear, (family, key, "not a linear layer of transformers' model")
        in_features, out_features = linear[path]
        want = (r, in_features) if kind == "lora_A" else (out_features, r)
        assert tuple(value.shape) == want, (family, key)
    return len(tensors) // 2


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in MOE])
def test_the_peft_export_names_the_layers_of_transformers_own_class(family, family_root, small_tokenizer, tmp_path):
    folder = family_folder(family_root, family, small_tokenizer)
    adapter = family_adapter(family_root, family, folder)
    result = export_peft(adapter, tmp_path / "peft")
    assert result.notes == []  # a verified family: no "not checked" note
    layers = len({k.rpartition(".")[0] for k in mx.load(str(adapter / "adapters.safetensors"))})
    assert check_peft_adapter_on_transformers(family, result.path) == layers


@pytest.mark.parametrize("family", MOE)
def test_a_moe_adapter_on_experts_or_router_is_refused_naming_the_family(
    family, family_root, small_tokenizer, tmp_path
):
    folder = family_folder(family_root, family, small_tokenizer)
    adapter = family_adapter(family_root, family, folder)  # every linear layer: experts and router too
    with pytest.raises(MlxDpoError, match=rf"^{family}: the adapter covers .*mixture-of-experts.*--lora-keys"):
        export_peft(adapter, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()
    # Its attention layers are linear layers in transformers too: that adapter exports and PEFT loads it.
    keys = ["self_attn.q_proj", "self_attn.v_proj"] + (["mlp.shared_expert.up_proj"] if family == "qwen2_moe" else [])
    attention = family_adapter(family_root, family, folder, keys=keys)
    peft_dir = export_peft(attention, tmp_path / "peft-attention").path
    assert check_peft_adapter_on_transformers(family, peft_dir) == len(keys) * 2  # 2 blocks


def test_a_family_whose_names_are_unchecked_gets_a_note_not_silence():
    notes = check_peft_family("starcoder2", ["model.layers.0.self_attn.q_proj"])
    assert notes == ["PEFT module names for model type 'starcoder2' are mlx-lm's, not checked against transformers"]
    with pytest.raises(MlxDpoError, match=r"^qwen3_moe: the adapter covers model\.layers\.0\.mlp\.switch_mlp"):
        check_peft_family("qwen3_moe", ["model.layers.0.mlp.switch_mlp.up_proj", "model.layers.0.self_attn.q_proj"])


# --- GGUF ----------------------------------------------------------------------------------------------------------


# Llama 3.1+'s rope scaling, with an original context of 64 tokens: of head_dim 8's 4 frequencies one stays,
# one is smoothed and two are divided by 8.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


# Gemma 3 as llama.cpp runs it: five layers sliding over a window (here 5 tokens, shorter than IDS), then one global.
GEMMA3_LLAMA_CPP = {"num_hidden_layers": 6, "sliding_window_pattern": 6}
GGUF_CASES = {
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "llama3-rope": ("llama", {"rope_scaling": LLAMA3_ROPE}),
    "gemma3": ("gemma3_text", GEMMA3_LLAMA_CPP),
    "phi3": ("phi3", {}),
}


@pytest.mark.parametrize("family, overrides", list(GGUF_CASES.values()), ids=list(GGUF_CASES))
def test_llama_cpp_runs_the_gguf_of_the_family_like_mlx_and_it_imports_back(
    family, overrides, family_root, small_tokenizer, tmp_path
):
    """llama.cpp's qwen2/qwen3 architectures (halves rotated, Q/K/V biases, Q/K norms), llama with Llama 3's
    rope scaling (written as llama.cpp's rope_freqs tensor), gemma3 (norms stored as 1 + w, sliding windows,
    no Q/K permutation) and phi3 (fused QKV and gate-up), on the fused model. llama.cpp running the file like
    mlx-lm shows the layout is llama.cpp's; importing it back must then give the same model (GGUF import)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from mlx_dpo.export.fuse import fused_model
    from mlx_dpo.export.gguf import write_fused_gguf
    from mlx_dpo.models.gguf import convert_gguf
    from mlx_dpo.models.load import load_model

    folder = family_folder(family_root, family, small_tokenizer, **overrides)
    fused = fused_model(family_adapter(family_root, family, folder), dequantize=True)
    # llama.cpp gives Phi-3's own special tokens (<s>, </s>, <unk>) attributes in a model whose general.name says
    # Phi-3, and fails to load one whose vocabulary lacks them, as this tiny one does: a name that does not say so.
    fused.base_name = "tiny"
    out = tmp_path / f"{family}.gguf"
    write_fused_gguf(fused, out)
    weights, fields = mx.load(str(out), return_metadata=True)
    arch = fields["general.architecture"]
    assert arch == family.removesuffix("_text") and f"{arch}.block_count" in fields
    if "rope_scaling" in overrides:
        factors = np.array(weights["rope_freqs.weight"])
        assert factors[0] == 1.0 and factors[-1] == 8.0 and 1.0 < factors[1] < 8.0  # kept, smoothed, divided
    reference = np.array(fused.loaded.model(mx.array([IDS]))[0])
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, verbose=False, logits_all=True)
    llm.eval(IDS)
    # float16 weights (and llama.cpp's float16 KV cache) against float32 ones: logits of magnitude ~5 agree to a
    # few 1e-3, up to 2.5e-2 through gemma3's six layers. A wrong layout or window is off by whole units (a window
    # of 4 or 6 instead of 5: 2-5).
    np.testing.assert_allclose(np.array(llm.scores[: len(IDS)]), reference, atol=5e-2, rtol=0)

    imported = load_model(str(convert_gguf(out, tmp_path / "imported")))
    assert imported.config["model_type"] == family
    as_written = fused.loaded.model  # the fused model with its matrices rounded to float16, as the file holds them
    as_written.update(
        tree_map(lambda p: p.astype(mx.float16).astype(mx.float32) if p.ndim == 2 else p, as_written.parameters())
    )
    np.testing.assert_allclose(
        np.array(imported.model(mx.array([IDS]))[0]), np.array(as_written(mx.array([IDS]))[0]), atol=1e-4, rtol=0
    )


def test_mistral_is_written_as_llama_and_a_sliding_window_one_is_refused(family_root, small_tokenizer, tmp_path):
    from mlx_dpo.export.gguf import export_gguf

    folder = family_folder(family_root, "mistral", small_tokenizer, layer_types=["full_attention"] * 2)
    out = export_gguf(family_adapter(family_root, "mistral", folder), tmp_path / "mistral.gguf").path
    weights, fields = mx.load(str(out), return_metadata=True)
    assert fields["general.architecture"] == "llama" and "llama.block_count" in fields and "output.weight" in weights

    sliding = family_folder(family_root, "mistral", small_tokenizer)  # layer 0 slides over 5 tokens
    with pytest.raises(MlxDpoError, match=r"^mistral: a model with sliding-window layers cannot be written as GGUF"):
        export_gguf(family_adapter(family_root, "mistral", sliding), tmp_path / "sliding.gguf")
    assert not (tmp_path / "sliding.gguf").exists()


def test_gguf_export_of_another_family_is_one_line_naming_it(family_root, small_tokenizer, tmp_path):
    family = "gemma2"
    folder = family_folder(family_root, family, small_tokenizer)
    out = tmp_path / "model.gguf"
    result = run_cli(
        "export",
        "--adapter-path",
        str(family_adapter(family_root, family, folder)),
        "--out",
        str(out),
        "--format",
        "gguf",
    )
    assert result.returncode == 2
    assert_clean_error(
        result, f"{family}: GGUF export supports the llama, mistral, qwen2, qwen3, gemma3_text, phi3 families only"
    )
    assert not list(tmp_path.glob("*.gguf*")) and not list(tmp_path.glob(".*"))


# --- quantized bases -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized_qwen3(family_root, small_tokenizer) -> Path:
    """A tiny qwen3 quantized to 4 bits the way mlx-lm's convert does (group size 32)."""
    import shutil

    from mlx_lm.utils import load_model as mlx_load_model
    from mlx_lm.utils import quantize_model, save_config, save_model

    dense = family_folder(family_root, "qwen3", small_tokenizer)
    out = family_root / "qwen3-q4"
    model, config = mlx_load_model(dense)
    model, config = quantize_model(model, config, group_size=32, bits=4)
    save_model(out, model)
    save_config(config, out / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(dense / name, out / name)
    return out


def test_a_4bit_base_dequantized_on_cpu_or_kept_gives_mlx_lms_own_logprobs(quantized_qwen3):
    import mlx.nn as nn
    from mlx_lm import load

    from mlx_dpo.models.adapter import add_adapter
    from mlx_dpo.models.load import load_model, should_dequantize
    from mlx_dpo.settings import LoraSettings

    own, _ = load(str(quantized_qwen3))  # mlx-lm's own forward of the quantized model
    assert isinstance(own.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    want = token_logps(own, IDS)

    assert should_dequantize() is (mx.default_device() == mx.cpu)  # this machine: the CPU backend
    dense = load_model(str(quantized_qwen3))  # the CPU default: dequantized to float32
    assert not dense.quantized and type(dense.model.model.layers[0].self_attn.q_proj) is nn.Linear
    np.testing.assert_allclose(token_logps(dense.model, IDS), want, atol=LOGPROB_TOL, rtol=0)

    kept = load_model(str(quantized_qwen3), dequantize=False)  # what Metal and CUDA get: QLoRA
    assert kept.quantized
    add_adapter(kept.model, LoraSettings(rank=2))
    q_proj = kept.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.linear, nn.QuantizedLinear) and q_proj.linear.bits == 4
    np.testing.assert_allclose(token_logps(kept.model, IDS), want, atol=LOGPROB_TOL, rtol=0)  # B = 0: the base


def test_a_4bit_base_exports_kept_quantized_or_dequantized(quantized_qwen3, tmp_path):
    import mlx.nn as nn
    from mlx_lm import load

    adapter = make_adapter(str(quantized_qwen3), tmp_path / "adapter", rank=2, seed=5, dequantize=False)
    kept = export_hf(adapter, tmp_path / "kept")
    config = json.loads((kept.path / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    model, _ = load(str(kept.path))
    assert isinstance(model.model.layers[1].mlp.down_proj, nn.QuantizedLinear)
    adapted = token_logps(bare_model(str(quantized_qwen3), adapter=adapter), IDS)
    base = token_logps(bare_model(str(quantized_qwen3)), IDS)
    # Re-quantizing the fused weights costs some accuracy: much closer to base + adapter than the base is.
    assert np.abs(token_logps(model, IDS) - adapted).mean() < 0.5 * np.abs(base - adapted).mean()

    dense = export_hf(adapter, tmp_path / "dense", dequantize=True)
    config = json.loads((dense.path / "config.json").read_text())
    assert "quantization" not in config and config["torch_dtype"] == "float32"
    model, _ = load(str(dense.path))
    assert type(model.model.layers[1].mlp.down_proj) is nn.Linear
    adapted = token_logps(bare_model(str(quantized_qwen3), adapter=adapter, dequantize=True), IDS)
    np.testing.assert_allclose(token_logps(model, IDS), adapted, atol=LOGPROB_TOL, rtol=0)
