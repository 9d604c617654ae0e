"""Model cards (README.md) for the exports: front matter the Hub indexes, how it was trained, how to run it.

The front matter is huggingface_hub's `ModelCardData`; the base's license comes from its source
GGUF (`general.license`) or its own model card. The training table is read from the adapter config,
the final metrics from the adapter's metrics.jsonl (minus measurements of the machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from mlx_dpo.export.base import hub_id, source_gguf
from mlx_dpo.export.fuse import FusedModel
from mlx_dpo.metric_names import PEAK_MEMORY_GB, TOKENS_PER_SECOND
from mlx_dpo.models.gguf_header import gguf_fields
from mlx_dpo.names import display_name
from mlx_dpo.settings import LoraSettings

# Metrics lines also carry machine measurements; a model card reports the training, not the laptop.
_MACHINE_METRICS = (TOKENS_PER_SECOND, PEAK_MEMORY_GB, "ref_pass_seconds", "ref_cache/")
_USE_WITH_MLX_LM = (
    "```python\nfrom mlx_lm import load, generate\n\n"
    'model, tokenizer = load("{name}")  # this folder, or its Hub repo id once pushed\n'
    'messages = [{{"role": "user", "content": "Hello!"}}]\n'
    "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)\n"
    "print(generate(model, tokenizer, prompt=prompt, max_tokens=100))\n```\n"
)
_USE_WITH_TRANSFORMERS = (
    "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
    'tokenizer = AutoTokenizer.from_pretrained("{name}")\n'
    'model = AutoModelForCausalLM.from_pretrained("{name}")\n'
    'messages = [{{"role": "user", "content": "Hello!"}}]\n'
    "inputs = tokenizer.apply_chat_template(\n"
    '    messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"\n)\n'
    "output = model.generate(**inputs, max_new_tokens=100)\n"
    'print(tokenizer.decode(output[0][inputs["input_ids"].shape[-1]:], skip_special_tokens=True))\n```\n'
)
_QUANTIZED_FOR_TRANSFORMERS = (
    "This export keeps MLX's quantized format, which transformers cannot load. Export again with "
    "`mlx-dpo export --dequantize` for a float16 model that transformers reads.\n"
)


# --- what the card says about the base and the training ---------------------------------------------------------


def base_license(model_folder: Path) -> str | None:
    """The base's license: the source GGUF's general.license, else the base folder's README front matter."""
    source = source_gguf(model_folder)
    if source is not None:
        license_field = gguf_fields(source, only="general.license").get("general.license")
        if license_field:
            return str(license_field[0])
    front = front_matter(model_folder / "README.md")
    value = front.get("license")
    return str(value) if value else None


def front_matter(readme: Path) -> dict:
    """The YAML front matter of a model card ({} without one, or when it does not parse)."""
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


def _card_front_matter(
    *, base_model: str | None, library: str, license_name: str | None, adapter_config: dict, tags: list[str]
) -> str:
    data = ModelCardData(
        base_model=base_model,
        library_name=library,
        license=license_name,
        datasets=datasets_of(adapter_config) or None,
        pipeline_tag="text-generation",
        tags=tags,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _training_section(adapter_config: dict, settings: LoraSettings) -> tuple[str, str]:
    return "## Training\n", _table(training_rows(adapter_config, settings), ("setting", "value")) + "\n"


# --- the two cards ----------------------------------------------------------------------------------------------


def model_card(fused: FusedModel, adapter_dir: Path, out: Path, *, torch_dtype: str | None) -> str:
    """README.md for a fused export: front matter, how it was trained, how to run it.

    `torch_dtype` names the dense weights' type ("float16", ...); None: the base's MLX quantization is kept.
    """
    quantized = torch_dtype is None
    base = fused.loaded.extra.get("hub_id") or fused.base_name
    name = out.name
    if quantized:
        q = fused.loaded.config.get("quantization") or {}
        precision = (
            f"MLX-quantized weights ({q.get('bits', '?')}-bit, group size {q.get('group_size', '?')}), as in the base"
        )
    else:
        precision = f"{torch_dtype} weights"
    method = "DoRA" if fused.settings.dora else "LoRA"
    tags = ["dpo", "mlx", "mlx-dpo", method.lower()]
    metrics = final_metrics(adapter_dir)
    parts = [
        _card_front_matter(
            base_model=fused.loaded.extra.get("hub_id"),
            library="mlx",
            tags=tags,
            license_name=base_license(fused.loaded.path),
            adapter_config=fused.adapter_config,
        ),
        f"# {name}\n",
        f"{base} aligned with Direct Preference Optimization (DPO) on MLX by mlx-dpo, with the {method} "
        f"adapter fused into the weights ({fused.fused_layers} layers). {precision}.\n",
        *_training_section(fused.adapter_config, fused.settings),
    ]
    if metrics:
        step = metrics.get("step")
        parts += [
            f"## Final metrics{f' (step {step})' if step is not None else ''}\n",
            _table([(k, _fmt(v)) for k, v in metrics.items() if k != "step"], ("metric", "value")) + "\n",
        ]
    parts += [
        "## Use with mlx-lm\n",
        _USE_WITH_MLX_LM.format(name=name),
        "## Use with transformers\n",
        _QUANTIZED_FOR_TRANSFORMERS if quantized else _USE_WITH_TRANSFORMERS.format(name=name),
    ]
    return "\n".join(parts)


def peft_card(
    adapter_config: dict, settings: LoraSettings, spec: str | None, path: Path, adapter_dir: Path, out: Path
) -> str:
    """README.md for a PEFT adapter folder (front matter with library_name: peft)."""
    repo = hub_id(spec, path)
    metrics = final_metrics(adapter_dir)
    parts = [
        _card_front_matter(
            base_model=repo,
            library="peft",
            license_name=base_license(path),
            adapter_config=adapter_config,
            tags=["dpo", "mlx", "mlx-dpo", "lora", "peft"],
        ),
        f"# {out.name}\n",
        f"A LoRA adapter for {repo or display_name(spec)}, trained with Direct Preference Optimization (DPO) by "
        "mlx-dpo and converted to PEFT's layout.\n",
        *_training_section(adapter_config, settings),
    ]
    if metrics:
        parts += ["## Final metrics\n", _table([(k, _fmt(v)) for k, v in metrics.items()], ("metric", "value")) + "\n"]
    parts += [
        "## Use with PEFT\n",
        "```python\nfrom peft import AutoPeftModelForCausalLM\n\n"
        f'model = AutoPeftModelForCausalLM.from_pretrained("{out.name}")  # this folder, or its Hub repo id\n```\n',
    ]
    return "\n".join(parts)
