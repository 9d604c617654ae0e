"""The model resolver: default model, GGUF files, local folders, HF-cache repos, and bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from helpers import assert_clean_error, make_tiny_model_folder, run_cli

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.generate import answer, chat_messages
from mlx_dpo.models.load import converted_dir, default_gguf, load_model, resolve_model_path

PARIS_QUESTION = "What is the capital of France? Answer in one sentence."


def lay_out_like_hf_cache(hf_home: Path, repo_id: str, files_from: Path) -> Path:
    """Copy a model folder into `hf_home` the way huggingface_hub stores a download."""
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in files_from.iterdir():
        blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / f.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def test_default_model_is_converted_once_under_mlx_dpo_home(default_model_path: Path):
    assert default_model_path == converted_dir(default_gguf())
    assert str(default_model_path).startswith(os.environ["MLX_DPO_HOME"])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (default_model_path / name).is_file()
    before = (default_model_path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path(None) == default_model_path
    assert (default_model_path / "model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in default_model_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_default_model_answers_greedily_with_paris(default_model):
    text = answer(default_model, chat_messages(PARIS_QUESTION), temperature=0.0, max_tokens=30)
    assert "Paris" in text


def test_on_cpu_the_quantized_default_is_dequantized_to_fp32(default_model):
    if mx.default_device() != mx.cpu:
        pytest.skip("dequantization applies to the CPU backend only")
    assert not default_model.quantized
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in default_model.model.named_modules())
    assert default_model.model.model.layers[0].self_attn.q_proj.weight.dtype == mx.float32


def test_cli_generate_streams_an_answer_on_the_default_model():
    result = run_cli("generate", "--prompt", PARIS_QUESTION, "--temperature", "0", "--max-tokens", "30")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_repo_id_resolves_from_a_local_hf_cache_while_offline(tmp_path: Path, default_model_path: Path):
    tiny = make_tiny_model_folder(tmp_path / "tiny", default_model_path)
    snapshot = lay_out_like_hf_cache(tmp_path / "hf", "acme/tiny-llama", tiny)
    result = run_cli(
        "convert", "--model", "acme/tiny-llama", env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == snapshot
    loaded = load_model(str(snapshot))
    assert loaded.config["num_hidden_layers"] == 2


def test_local_mlx_lm_folder_loads_directly(tmp_path: Path, default_model_path: Path):
    tiny = make_tiny_model_folder(tmp_path / "tiny", default_model_path)
    loaded = load_model(str(tiny))
    assert loaded.path == tiny
    logits = loaded.model(mx.array([[1, 2, 3]]))
    assert logits.shape == (1, 3, loaded.config["vocab_size"])


def test_unknown_repo_id_while_offline_is_one_clear_line(tmp_path: Path):
    result = run_cli(
        "generate",
        "--model",
        "nobody/no-such-model",
        "--prompt",
        "hi",
        env={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"},
    )
    assert_clean_error(result, "nobody/no-such-model", "not in the Hugging Face cache", "HF_HUB_OFFLINE")


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d, "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "unreadable"),
        (lambda d: (d / "config.json").write_text("{}"), "no model*.safetensors"),
    ],
    ids=["empty-folder", "broken-config", "no-weights"],
)
def test_unusable_model_folder_is_one_clear_line(tmp_path: Path, make, expected: str):
    folder = tmp_path / "model"
    folder.mkdir()
    make(folder)
    result = run_cli("generate", "--model", str(folder), "--prompt", "hi")
    assert_clean_error(result, str(folder), expected)


def test_unreadable_folder_is_reported(tmp_path: Path):
    if os.geteuid() == 0:
        pytest.skip("root reads any folder; permissions cannot make one unreadable")
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    folder.chmod(0)
    try:
        with pytest.raises(MlxDpoError, match="not readable"):
            resolve_model_path(str(folder))
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "GGUF file not found"),
        (b"PK\x03\x04 this is a zip", "not a GGUF file"),
        ("truncated", "damaged or truncated"),
    ],
    ids=["missing", "not-gguf", "truncated"],
)
def test_bad_gguf_is_one_clear_line(tmp_path: Path, content, expected: str):
    path = tmp_path / "model.gguf"
    if content == "truncated":
        path.write_bytes(default_gguf().read_bytes()[:1_000_000])
    elif content is not None:
        path.write_bytes(content)
    result = run_cli("generate", "--model", str(path), "--prompt", "hi")
    assert_clean_error(result, str(path), expected)
    assert not list(Path(os.environ["MLX_DPO_HOME"], "models").glob("model-*"))


def test_model_that_is_neither_path_nor_repo_id_is_rejected():
    result = run_cli("generate", "--model", "./does/not/exist", "--prompt", "hi")
    assert_clean_error(result, "./does/not/exist", "no such file or folder")


# --- the one adapter loader (generate, eval, training's starting adapter, the app, export) --------------------------


def test_an_adapter_for_another_base_is_one_line_naming_the_tensor(tmp_path: Path, default_model_path: Path):
    from helpers import make_adapter

    tiny = make_tiny_model_folder(tmp_path / "tiny", default_model_path)
    small = make_tiny_model_folder(tmp_path / "small", default_model_path, hidden=32, seed=1)
    adapter = make_adapter(str(small), tmp_path / "adapter")
    result = run_cli("generate", "--model", str(tiny), "--adapter-path", str(adapter), "--prompt", "hi")
    assert_clean_error(
        result,
        "adapter does not fit tiny",
        "down_proj.lora_a has shape [64, 4]",
        "maps 128 to 64",
        f"trained on '{small}'",
        "--model",
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(MlxDpoError, match=r"empty: not an adapter folder \(no adapter_config.json\)"):
        load_model(str(tiny), adapter_path=tmp_path / "empty")
    with pytest.raises(MlxDpoError, match="nope: adapter folder not found"):
        load_model(str(tiny), adapter_path=tmp_path / "nope")


def test_an_adapter_written_by_mlx_lm_loads_as_mlx_lm_loads_it(tmp_path: Path, default_model_path: Path):
    import json

    from helpers import bare_model, make_adapter

    tiny = make_tiny_model_folder(tmp_path / "tiny", default_model_path)
    adapter = make_adapter(str(tiny), tmp_path / "adapter", num_layers=-1)
    config = json.loads((adapter / "adapter_config.json").read_text())
    # mlx-lm's trainer: no mlx_dpo section, the base under "model", and num_layers -1 for "all blocks".
    del config["mlx_dpo"], config["base_model"]
    config.update(model=str(tiny), num_layers=-1)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    loaded = load_model(str(tiny), adapter_path=adapter)
    ids = mx.array([[1, 2, 3, 4]])
    want = bare_model(str(tiny), adapter=adapter)(ids)
    assert mx.allclose(loaded.model(ids), want, atol=1e-5).item()
    assert loaded.adapter_path == adapter


def test_switching_adapters_in_place_gives_each_version_exactly(tmp_path: Path, tiny: Path):
    """The app swaps versions on its loaded base; each must compute what a fresh load of it computes."""
    from helpers import make_adapter

    lora = make_adapter(str(tiny), tmp_path / "v1", seed=1)
    dora = make_adapter(str(tiny), tmp_path / "v2", seed=2, dora=True, keys=["self_attn.q_proj"])
    tokens = mx.array([[1, 5, 9, 42, 7, 300]])

    def logits(loaded) -> mx.array:
        out = loaded.model(tokens)
        mx.eval(out)
        return out

    fresh = {path: logits(load_model(str(tiny), adapter_path=path)) for path in (lora, dora)}
    fresh[None] = logits(load_model(str(tiny)))
    loaded = load_model(str(tiny))
    for path in (lora, dora, None, dora, lora, None):
        loaded.use_adapter(path)
        assert loaded.adapter_path == (None if path is None else path)
        assert mx.array_equal(logits(loaded), fresh[path]), path
    assert not mx.array_equal(fresh[lora], fresh[None])  # the adapters do change the model


def test_an_adapter_that_does_not_fit_leaves_the_version_that_was_on(tmp_path: Path, tiny: Path, default_model_path):
    from helpers import make_adapter

    good = make_adapter(str(tiny), tmp_path / "good", seed=1)
    other = make_tiny_model_folder(tmp_path / "wider", default_model_path, hidden=32)
    misfit = make_adapter(str(other), tmp_path / "misfit")
    loaded = load_model(str(tiny), adapter_path=good)
    before = loaded.model(mx.array([[1, 2, 3]]))
    with pytest.raises(MlxDpoError, match="does not fit"):
        loaded.use_adapter(misfit)
    assert loaded.adapter_path == good
    assert mx.array_equal(loaded.model(mx.array([[1, 2, 3]])), before)


def test_an_exception_inside_session_adapter_leaves_the_previous_adapter_on(tmp_path: Path, tiny: Path):
    """`with session.adapter(path)` puts `path` on for the block and the previous version back after it, also when
    the block raises; nested blocks unwind in order."""
    from helpers import make_adapter

    v1, v2 = make_adapter(str(tiny), tmp_path / "v1", seed=1), make_adapter(str(tiny), tmp_path / "v2", seed=2)
    tokens = mx.array([[1, 5, 9, 42]])
    session = load_model(str(tiny), adapter_path=v1)
    on_v1 = session.model(tokens)
    with pytest.raises(ZeroDivisionError):
        with session.adapter(v2):
            assert session.adapter_path == v2 and not mx.array_equal(session.model(tokens), on_v1)
            raise ZeroDivisionError  # an error inside the block
    assert session.adapter_path == v1
    assert mx.array_equal(session.model(tokens), on_v1)
    with session.base():
        assert session.adapter_path is None
        with session.adapter(v2):
            assert session.adapter_path == v2
        assert session.adapter_path is None
    assert session.adapter_path == v1 and mx.array_equal(session.model(tokens), on_v1)


def test_an_adapter_in_training_is_kept_until_saved_and_dropped_when_the_run_fails(tiny: Path):
    from mlx_dpo.settings import LoraSettings

    session = load_model(str(tiny))
    session.train_adapter(None, LoraSettings(rank=4))
    assert any(hasattr(m, "lora_a") for _, m in session.model.named_modules())
    with pytest.raises(RuntimeError, match="in training"):  # its weights are nowhere to put back from
        with session.base():
            pass
    session.drop_training()
    assert session.adapter_path is None and session.adapter_settings is None
    assert not any(hasattr(m, "lora_a") for _, m in session.model.named_modules())  # the base alone again
