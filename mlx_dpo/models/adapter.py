"""The policy's LoRA/DoRA adapter: put it on a model, save it in mlx-lm's format, load it back.

An adapter folder holds `adapter_config.json` + `adapters.safetensors`, exactly what
`mlx_lm.load(model, adapter_path=...)` reads. Only the adapter's parameters train.

`load_adapter` is the one loading path (training's starting adapter, eval, generate, the app, export):
it checks the adapter fits the model by tensor shapes first, so a wrong base is one line naming the tensor.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlx_dpo.atomic import atomic_path, write_json
from mlx_dpo.compat import fused_lora_layers, lora_base_layers
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.settings import LoraSettings  # defined with the other settings (mlx_dpo.settings)

ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"


def add_adapter(model: nn.Module, settings: LoraSettings) -> None:
    """Freeze the base model and wrap its linear layers in fresh LoRA (or DoRA) layers.

    LoRA's B starts at zero (DoRA's magnitude at the base norm), so the adapted model starts equal to the base.
    """
    from mlx_lm.tuner.utils import linear_to_lora_layers

    num_blocks = len(model.layers)
    if settings.num_layers > num_blocks:
        raise MlxDpoError(f"--lora-layers {settings.num_layers}: the model has only {num_blocks} layers")
    model.freeze()
    config = {"rank": settings.rank, "scale": settings.scale, "dropout": settings.dropout}
    if settings.keys:
        config["keys"] = list(settings.keys)
    linear_to_lora_layers(model, _num_layers(settings, num_blocks), config, use_dora=settings.dora)


def remove_adapter(model: nn.Module) -> None:
    """Unwrap every adapter layer back to the base layer inside it: the base model again, in place.

    Switching versions this way costs an adapter file's read, not a reload of the base.
    """
    bases = lora_base_layers(model)
    if bases:
        model.update_modules(tree_unflatten(bases))


def fuse_adapter(model: nn.Module, *, dequantize: bool) -> int:
    """Replace every LoRA/DoRA layer by its base layer with the update folded in (mlx-lm's own `fuse`); returns
    how many. A quantized base is re-quantized after the update is added unless `dequantize`, which keeps it dense.
    """
    fused = fused_lora_layers(model, dequantize=dequantize)
    if fused:
        model.update_modules(tree_unflatten(fused))
    mx.eval(model.parameters())
    return len(fused)


def _num_layers(settings: LoraSettings, num_blocks: int) -> int:
    return num_blocks if settings.num_layers < 0 else settings.num_layers


def adapter_config(settings: LoraSettings, model: nn.Module, base_model: str, extra: dict | None = None) -> dict:
    """mlx-lm's adapter_config.json, plus an `mlx_dpo` section with what trained it."""
    lora = {"rank": settings.rank, "scale": settings.scale, "dropout": settings.dropout}
    if settings.keys:
        lora["keys"] = list(settings.keys)
    return {
        "fine_tune_type": "dora" if settings.dora else "lora",
        "num_layers": _num_layers(settings, len(model.layers)),
        "lora_parameters": lora,
        "base_model": base_model,
        "mlx_dpo": {"lora": asdict(settings), **(extra or {})},
    }


def adapter_weights(model: nn.Module) -> dict[str, mx.array]:
    """The trainable (adapter) parameters by their module path."""
    return dict(tree_flatten(model.trainable_parameters()))


def save_arrays(path: Path, arrays: dict[str, mx.array]) -> None:
    """`mx.save_safetensors`, atomically: a crash leaves the old file or the new one."""
    with atomic_path(path) as tmp:
        mx.save_safetensors(str(tmp), arrays)


def save_adapter(folder: Path, model: nn.Module, config: dict) -> None:
    """Write the adapter atomically: weights first, then the config that makes the folder loadable."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = adapter_weights(model)
    save_arrays(folder / ADAPTER_FILE, weights)
    write_json(folder / CONFIG_FILE, config)


def read_adapter_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlxDpoError(f"{folder}: not an adapter folder (no {CONFIG_FILE})") from None
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{folder / CONFIG_FILE}: unreadable ({e})") from None


def settings_from_config(config: dict) -> LoraSettings:
    saved = config.get("mlx_dpo", {}).get("lora")
    if saved:
        return LoraSettings(**saved)
    lora = config.get("lora_parameters", {})
    rank = int(lora.get("rank", 8))
    return LoraSettings(
        rank=rank,
        alpha=float(lora.get("scale", 20.0)) * rank,
        dropout=float(lora.get("dropout", 0.0)),
        num_layers=int(config.get("num_layers", -1)),
        keys=lora.get("keys"),
        dora=config.get("fine_tune_type") == "dora",
    )


def recorded_base(config: dict) -> str | None:
    """The base model an adapter config names (mlx-dpo writes `base_model`, mlx-lm's trainer `model`)."""
    value = config.get("base_model") or config.get("model")
    return str(value) if value else None


def check_adapter_folder(folder: str | Path) -> Path:
    """The adapter folder as a Path, or one line saying why it is not one."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MlxDpoError(f"{folder}: adapter folder not found")
    for name in (CONFIG_FILE, ADAPTER_FILE):
        if not (folder / name).is_file():
            raise MlxDpoError(f"{folder}: not an adapter folder (no {name})")
    return folder


def read_adapter_weights(folder: Path) -> dict[str, mx.array]:
    try:
        return mx.load(str(folder / ADAPTER_FILE))
    except (OSError, ValueError, RuntimeError) as e:
        raise MlxDpoError(f"{folder / ADAPTER_FILE}: unreadable ({e})") from None


def layer_dims(module: nn.Module) -> tuple[int, int] | None:
    """(input, output) sizes of a layer an adapter can wrap; None for kinds not checked here."""
    if isinstance(module, nn.QuantizedLinear):
        return module.weight.shape[1] * 32 // module.bits, module.weight.shape[0]
    if isinstance(module, nn.Linear):
        return module.weight.shape[1], module.weight.shape[0]
    if isinstance(module, nn.QuantizedEmbedding):
        return module.weight.shape[0], module.weight.shape[1] * 32 // module.bits
    if isinstance(module, nn.Embedding):
        return module.weight.shape[0], module.weight.shape[1]
    return None


def check_adapter_fits(model: nn.Module, weights: dict[str, mx.array], config: dict, folder: Path, base: str) -> None:
    """Refuse an adapter trained on another base with one clear line, before any layer is touched.

    Names alone cannot tell (the same base has many names), so the check compares tensor shapes
    with the base's layers, and the number of blocks an all-layers adapter covers. `base` names the
    model in the message.
    """
    hint = f"it was trained on {recorded_base(config) or 'an unknown base'!r}; pass that base with --model"
    modules = dict(model.named_modules())
    for key in sorted(weights):
        path, _, kind = key.rpartition(".")
        module = modules.get(path)
        if module is None:
            raise MlxDpoError(f"{folder}: adapter does not fit {base}: the base has no layer {path} ({hint})")
        dims = layer_dims(module)
        if dims is None:
            continue
        in_dims, out_dims = dims
        shape = tuple(weights[key].shape)
        fits = {"lora_a": shape[:1] == (in_dims,), "lora_b": shape[-1:] == (out_dims,), "m": shape == (out_dims,)}
        if not fits.get(kind, True):
            raise MlxDpoError(
                f"{folder}: adapter does not fit {base}: {key} has shape {list(shape)} but the base's "
                f"{path} maps {in_dims} to {out_dims} ({hint})"
            )
    blocks = len(getattr(model, "layers", []))
    trained_blocks = config.get("num_layers")
    # mlx-lm's own configs may say -1 ("all"); only a recorded count can disagree with this base.
    all_blocks = settings_from_config(config).num_layers < 0
    if all_blocks and isinstance(trained_blocks, int) and trained_blocks > 0 and blocks and trained_blocks != blocks:
        raise MlxDpoError(
            f"{folder}: adapter does not fit {base}: it adapts all {trained_blocks} blocks of its base, "
            f"this base has {blocks} ({hint})"
        )


def load_adapter(model: nn.Module, folder: str | Path, *, base: str = "this model") -> LoraSettings:
    """Put the adapter in `folder` on a model: the one way every caller loads an adapter.

    Checks the folder, then that the adapter fits the model (`base` names it in the message), then
    wraps the layers (freezing the base) and loads the weights. Train/eval mode is left to the caller.
    """
    folder = check_adapter_folder(folder)
    config = read_adapter_config(folder)
    if config.get("fine_tune_type") == "full":
        raise MlxDpoError(f"{folder}: a full fine-tune (fine_tune_type: full), not a LoRA or DoRA adapter")
    weights = read_adapter_weights(folder)
    check_adapter_fits(model, weights, config, folder, base)
    settings = settings_from_config(config)
    add_adapter(model, settings)
    expected = {k: v.shape for k, v in adapter_weights(model).items()}
    wrong = [k for k, v in weights.items() if expected.get(k) != v.shape]
    if wrong or set(weights) != set(expected):
        example = (wrong or sorted(set(expected) ^ set(weights)))[0]
        raise MlxDpoError(f"{folder}: adapter does not fit {base} (mismatched tensors, e.g. {example})")
    model.load_weights(list(weights.items()), strict=False)
    return settings
