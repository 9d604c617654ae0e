"""The GGUF converter, on tiny llama GGUF files written here the way llama.cpp writes them: one per tensor type it
reads (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K-Q6_K, and a mix laid out like Gemma 3's Q4_K_M file).

Each file is imported, and its logits compared with a llama built from the `gguf` package's own dequantization
of the same bytes. The other architectures (qwen2, qwen3, gemma3, phi3) are checked against llama.cpp itself in
tests/test_family_exports.py, and the real Gemma 3 270M file in tests/test_gemma3.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import gguf_fixtures as tiny
import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from mlx.utils import tree_map_with_path
from mlx_lm.utils import load_model, load_tokenizer

import mlx_dpo.models.gguf as converter
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.gguf import convert_gguf

TOKEN_IDS = [int(i) for i in np.random.default_rng(1).integers(0, tiny.VOCAB, 16)]


@dataclass(frozen=True)
class Layout:
    weights: Q
    embedding: Q
    tied: bool = False
    dims: tiny.Dims = tiny.TINY
    by_name: dict = field(default_factory=dict)  # mlx-lm layer -> its own type

    @property
    def packed(self) -> bool:
        """Whether mx.load reads the file as it is (quantized tensors stay MLX triples)."""
        return {self.weights, self.embedding, *self.by_name.values()} <= NATIVE


NATIVE = {Q.F32, Q.F16, Q.Q4_0, Q.Q4_1, Q.Q8_0}
LAYOUTS = {
    **{name: Layout(Q[name], Q[name]) for name in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")},
    **{name: Layout(Q[name], Q[name], dims=tiny.WIDE) for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")},
    "Q4_1-Q8_0-embedding-tied": Layout(Q.Q4_1, Q.Q8_0, tied=True),  # like the default model
    # like gemma-3-270m-q4_k_m.gguf: mostly Q5_0, a Q8_0 embedding, Q4_K and Q6_K in places
    "Q4_K_M-mix": Layout(
        Q.Q5_0, Q.Q8_0, tied=True, dims=tiny.WIDE, by_name={"self_attn.o_proj": Q.Q4_K, "mlp.down_proj": Q.Q6_K}
    ),
}


class Converted:
    """A tiny GGUF file, what the `gguf` package says it holds, and its conversion."""

    def __init__(self, root: Path, name: str) -> None:
        self.layout = layout = LAYOUTS[name]
        self.tied, self.dims = layout.tied, layout.dims
        self.source = tiny.random_llama_weights(seed=0, tied=self.tied, dims=self.dims)
        self.gguf = root / f"{name}.gguf"
        self.expected = tiny.write_llama_gguf(
            self.gguf, self.source, layout.weights, layout.embedding, dims=self.dims, types_by_name=layout.by_name
        )
        self.folder = convert_gguf(self.gguf, root / name)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    return Converted(tmp_path_factory.mktemp("gguf"), request.param)


@pytest.fixture(scope="module")
def converted_f32(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    return Converted(tmp_path_factory.mktemp("gguf"), "F32")


@pytest.fixture(scope="module")
def converted_q4_1(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    return Converted(tmp_path_factory.mktemp("gguf"), "Q4_1-Q8_0-embedding-tied")


def dequantized(folder: Path) -> dict[str, np.ndarray]:
    """The converted weights as float32, unpacking quantized triples (in float32, so exactly)."""
    weights = mx.load(str(folder / "model.safetensors"))
    out = {}
    for key, value in weights.items():
        stem, _, kind = key.rpartition(".")
        if kind == "weight" and f"{stem}.scales" in weights:
            scales = weights[f"{stem}.scales"].astype(mx.float32)
            biases = weights[f"{stem}.biases"].astype(mx.float32)
            bits = value.shape[-1] * 32 // (scales.shape[-1] * 32)
            value = mx.dequantize(value, scales, biases, group_size=32, bits=bits)
        if kind == "weight":
            out[key] = np.array(value.astype(mx.float32))
    return out


def upcast_scales(model) -> None:
    """Make a quantized model compute exactly: MLX otherwise dequantizes the embedding in float16."""
    params = tree_map_with_path(
        lambda path, p: p.astype(mx.float32) if path.endswith(("scales", "biases")) else p,
        model.parameters(),
    )
    model.update(params)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir()] if out.parent.exists() else []
    assert not [name for name in leftovers if out.name in name], leftovers


# --- weights and logits -------------------------------------------------------------------------


def test_f32_logits_equal_the_source_model(converted_f32: Converted) -> None:
    model, _ = load_model(converted_f32.folder)
    source = tiny.llama_model(converted_f32.source, tied=False)
    np.testing.assert_allclose(tiny.logits(model, TOKEN_IDS), tiny.logits(source, TOKEN_IDS), atol=1e-4, rtol=0)


def test_weights_equal_the_gguf_packages_dequantization(converted: Converted) -> None:
    got = dequantized(converted.folder)
    assert sorted(got) == sorted(converted.expected)
    for name, want in converted.expected.items():
        np.testing.assert_allclose(got[name], want, atol=1e-6, rtol=0, err_msg=name)


def test_logits_equal_a_llama_with_the_dequantized_weights(converted: Converted) -> None:
    model, _ = load_model(converted.folder)
    upcast_scales(model)
    reference = tiny.llama_model(converted.expected, tied=converted.tied, dims=converted.dims)
    np.testing.assert_allclose(tiny.logits(model, TOKEN_IDS), tiny.logits(reference, TOKEN_IDS), atol=1e-4, rtol=0)


def test_quantized_tensors_stay_packed(converted_q4_1: Converted) -> None:
    weights = mx.load(str(converted_q4_1.folder / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (tiny.HIDDEN, tiny.HIDDEN * 4 // 32)
    assert weights["model.embed_tokens.weight"].shape == (tiny.VOCAB, tiny.HIDDEN * 8 // 32)
    assert "lm_head.weight" not in weights


def test_a_file_with_any_other_type_is_dequantized_to_float32_whole(tmp_path_factory: pytest.TempPathFactory) -> None:
    converted = Converted(tmp_path_factory.mktemp("mix"), "Q4_K_M-mix")
    weights = mx.load(str(converted.folder / "model.safetensors"))
    assert not any(k.endswith(".scales") for k in weights)  # the Q8_0 embedding too: exactly gguf's values
    assert weights["model.embed_tokens.weight"].dtype == mx.float32
    np.testing.assert_array_equal(
        np.array(weights["model.embed_tokens.weight"]), converted.expected["model.embed_tokens.weight"]
    )


def test_mlx_lm_load_runs_the_converted_folder_as_is(converted_q4_1: Converted) -> None:
    model, tokenizer = mlx_lm.load(str(converted_q4_1.folder))
    reference = tiny.llama_model(converted_q4_1.expected, tied=True)
    # As loaded, the embedding is dequantized in float16: close, not exact.
    np.testing.assert_allclose(tiny.logits(model, TOKEN_IDS), tiny.logits(reference, TOKEN_IDS), atol=3e-2, rtol=0)
    assert tokenizer.eos_token_id == tiny.EOS_ID


def test_skipping_the_qk_unpermute_changes_the_logits(
    converted_f32: Converted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(converter, "unpermute_rows", lambda w, n_heads: w)
    model, _ = load_model(convert_gguf(converted_f32.gguf, tmp_path / "no-unpermute"))
    source = tiny.llama_model(converted_f32.source, tied=False)
    assert np.abs(tiny.logits(model, TOKEN_IDS) - tiny.logits(source, TOKEN_IDS)).max() > 0.1


@pytest.mark.parametrize("shape", [(64, 64), (32, 64), (64, 8), (64,)], ids=str)
@pytest.mark.parametrize("n_heads", [4, 2])
def test_unpermute_rows_inverts_llama_cpps_permutation(shape: tuple[int, ...], n_heads: int) -> None:
    w = np.arange(np.prod(shape), dtype=np.uint32).reshape(shape)  # packed rows permute alike
    permuted = tiny.llama_cpp_permute(w, n_heads)
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(np.array(converter.unpermute_rows(mx.array(permuted), n_heads)), w)
    np.testing.assert_array_equal(np.array(converter.permute_rows(mx.array(w), n_heads)), permuted)


# --- the rest of the folder ---------------------------------------------------------------------


def test_config_comes_from_the_metadata(converted: Converted) -> None:
    config = json.loads((converted.folder / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == converted.dims.hidden
    assert config["num_hidden_layers"] == tiny.LAYERS
    assert config["intermediate_size"] == converted.dims.intermediate
    assert config["num_attention_heads"] == tiny.HEADS
    assert config["num_key_value_heads"] == tiny.KV_HEADS
    assert config["head_dim"] == converted.dims.hidden // tiny.HEADS
    assert config["rope_theta"] == tiny.ROPE_THETA
    assert config["rms_norm_eps"] == pytest.approx(tiny.RMS_EPS)
    assert config["max_position_embeddings"] == tiny.CONTEXT
    assert config["vocab_size"] == tiny.VOCAB
    assert config["tie_word_embeddings"] is converted.tied
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
    # Packed only where mx.load reads the whole file and something in it is quantized.
    assert ("quantization" in config) is (converted.layout.packed and converted.layout.weights not in (Q.F32, Q.F16))


def test_tokenizer_uses_the_embedded_vocabulary(converted_f32: Converted) -> None:
    _, tokenizer = mlx_lm.load(str(converted_f32.folder))
    tokens = tiny.tiny_vocab()[0]
    ids = tokenizer.encode("<|im_start|> the quick brown fox<|im_end|>")
    assert [tokens[i] for i in ids] == ["<|im_start|>", "Ġthe", "Ġquick", "Ġbrown", "Ġfox", "<|im_end|>"]
    assert tokenizer.chat_template == tiny.CHAT_TEMPLATE


@pytest.fixture(scope="module")
def add_bos_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("add-bos")
    path = root / "add-bos.gguf"
    tiny.write_llama_gguf(path, tiny.random_llama_weights(seed=0, tied=True), add_bos=True)
    return path, convert_gguf(path, root / "model")


def test_tokenizer_prepends_bos_when_the_gguf_says_add_bos_token(add_bos_gguf: tuple[Path, Path]) -> None:
    tokenizer = load_tokenizer(add_bos_gguf[1])
    tokens = tiny.tiny_vocab()[0]
    assert [tokens[i] for i in tokenizer.encode(" the fox")] == ["<|im_start|>", "Ġthe", "Ġfox"]


def test_tokenizer_with_add_bos_token_matches_llama_cpp(add_bos_gguf: tuple[Path, Path]) -> None:
    import llama_cpp  # llama-cpp-python (a dev dependency) is the reference tokenizer: missing, this fails

    gguf_path, folder = add_bos_gguf
    llama = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    tokenizer = load_tokenizer(folder)
    for text in ["", " the quick brown fox", "<|im_start|>user\n and over<|im_end|>\n\n"]:
        assert tokenizer.encode(text) == llama.tokenize(text.encode(), add_bos=True, special=True), text


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe"])
def test_qwen_and_llama3_pre_tokenizers_split_as_llama_cpps(pre: str, tmp_path: Path) -> None:
    """Qwen2/Qwen3 files say pre "qwen2" (digits one at a time), Llama 3 files "llama-bpe" (up to three)."""
    import llama_cpp

    path = tmp_path / f"{pre}.gguf"
    tiny.write_llama_gguf(path, tiny.random_llama_weights(seed=0, tied=True), pre=pre)
    tokenizer = load_tokenizer(convert_gguf(path, tmp_path / "model"))
    llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in ["12345 and 3.14159", " the quick brown fox's tail", "I'M LOUD\n\n  spaced\tout", "a1b22c333"]:
        assert tokenizer.encode(text) == llama.tokenize(text.encode(), add_bos=False, special=True), text


def test_folder_records_its_source(converted_f32: Converted) -> None:
    source = json.loads((converted_f32.folder / "mlx_dpo_source.json").read_text())
    assert source == {"gguf": str(converted_f32.gguf.resolve()), "name": "tiny-llama"}


# --- bad input ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("good") / "tiny.gguf"
    tiny.write_llama_gguf(path, tiny.random_llama_weights(seed=0, tied=True), Q.Q4_1)
    return path


def truncated(good: Path, folder: Path, keep: float) -> Path:
    path = folder / "truncated.gguf"
    data = good.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


BAD_INPUTS = {
    "missing": lambda good, folder: folder / "nowhere.gguf",
    "truncated-in-metadata": lambda good, folder: truncated(good, folder, 0.02),
    "truncated-in-tensors": lambda good, folder: truncated(good, folder, 0.6),
    "truncated-by-one-byte": lambda good, folder: truncated(
        good, folder, (good.stat().st_size - 1) / good.stat().st_size
    ),
    "not-gguf": lambda good, folder: _write(folder / "model.gguf", b'{"this": "is json"}\n'),
    "empty": lambda good, folder: _write(folder / "empty.gguf", b""),
    "a-folder": lambda good, folder: _mkdir(folder / "folder.gguf"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_file_raises_an_error_naming_it_and_writes_nothing(kind: str, good_gguf: Path, tmp_path: Path) -> None:
    bad = BAD_INPUTS[kind](good_gguf, tmp_path)
    out = tmp_path / "models" / "converted"
    with pytest.raises(MlxDpoError, match=re.escape(str(bad))):
        convert_gguf(bad, out)
    assert_nothing_written(out)


@pytest.mark.parametrize("arch", ["gpt2", "mamba"])
def test_other_architecture_raises_an_error_naming_the_file(arch: str, tmp_path: Path) -> None:
    path = tmp_path / f"{arch}.gguf"
    tiny.write_llama_gguf(path, tiny.random_llama_weights(seed=0, tied=True), arch=arch)
    out = tmp_path / "models" / "converted"
    with pytest.raises(MlxDpoError, match=rf"{re.escape(str(path))}: architecture '{arch}' is not supported"):
        convert_gguf(path, out)
    assert_nothing_written(out)


@pytest.fixture(scope="module")
def iq_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A llama whose feed-forward down projections are IQ4_XS, a type the importer does not read."""
    path = tmp_path_factory.mktemp("iq") / "iq4_xs.gguf"
    weights = tiny.random_llama_weights(seed=0, tied=True, dims=tiny.WIDE)
    tiny.write_llama_gguf(path, weights, Q.Q8_0, dims=tiny.WIDE, types_by_name={"mlp.down_proj": Q.IQ4_XS})
    return path


def test_an_unsupported_tensor_type_is_one_line_naming_it_and_the_tensor(iq_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    with pytest.raises(
        MlxDpoError,
        match=rf"^{re.escape(str(iq_gguf))}: tensor blk\.0\.ffn_down\.weight is stored as "
        r"IQ4_XS, a type mlx-dpo cannot import \(supported: .*Q4_K.*\)$",
    ):
        convert_gguf(iq_gguf, out)
    assert_nothing_written(out)


def test_the_cli_names_an_unsupported_type_in_one_line_and_exits_2(iq_gguf: Path, tmp_path: Path) -> None:
    from helpers import assert_clean_error, run_cli

    result = run_cli("convert", "--model", str(iq_gguf), env={"MLX_DPO_HOME": str(tmp_path / "home")})
    assert result.returncode == 2
    assert_clean_error(result, "is stored as IQ4_XS, a type mlx-dpo cannot import")


def test_the_cli_names_an_unsupported_architecture_in_one_line_and_exits_2(tmp_path: Path) -> None:
    from helpers import assert_clean_error, run_cli

    mamba = tmp_path / "mamba.gguf"
    tiny.write_llama_gguf(mamba, tiny.random_llama_weights(seed=0, tied=True), arch="mamba")
    result = run_cli("generate", "--model", str(mamba), "--prompt", "hi", env={"MLX_DPO_HOME": str(tmp_path / "home")})
    assert result.returncode == 2
    assert_clean_error(
        result, f"{mamba}: architecture 'mamba' is not supported (supported: llama, qwen2, qwen3, gemma3, phi3)"
    )


@pytest.mark.parametrize("keep", [0.5, "all-but-one-byte"])
def test_a_truncated_k_quant_file_is_called_damaged(keep, tmp_path: Path) -> None:
    good = tmp_path / "q4_k.gguf"
    tiny.write_llama_gguf(good, tiny.random_llama_weights(seed=0, tied=True, dims=tiny.WIDE), Q.Q4_K, dims=tiny.WIDE)
    size = good.stat().st_size
    bad = truncated(good, tmp_path, (size - 1) / size if keep == "all-but-one-byte" else keep)
    with pytest.raises(MlxDpoError, match=rf"^{re.escape(str(bad))}: damaged or truncated GGUF file \(tensor "):
        convert_gguf(bad, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_failure_while_writing_leaves_nothing_behind(
    good_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mx, "save_safetensors", disk_full)
    out = tmp_path / "models" / "converted"
    with pytest.raises(MlxDpoError, match=re.escape(str(out))):
        convert_gguf(good_gguf, out)
    assert_nothing_written(out)


def test_existing_output_folder_is_left_alone(good_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(MlxDpoError, match=re.escape(str(out))):
        convert_gguf(good_gguf, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]
