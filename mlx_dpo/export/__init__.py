"""Export a trained adapter: fused into its base as a Hugging Face folder or a GGUF file, or as a PEFT adapter.

    export("adapters/run", "out/fused", format="hf", dequantize=True)

`export` is the one entry: `mlx-dpo export` and the app's Export screen both call it. The modules
each do one job, and none imports this package's __init__ (so there is no cycle through it):

    base.py         the base an adapter records, how it is named, ExportResult, the output checks
    fuse.py         base + adapter fused in memory (shared by hf and gguf)
    hf.py           the Hugging Face folder: weights (mlx-lm's shards), config, generation config, tokenizer
    card.py         model cards (README.md) for the hf and peft exports
    peft.py         the adapter in PEFT's layout
    gguf.py         a fused model as a GGUF file (llama.cpp's `gguf` writer; the families of GGUF_FAMILIES)
    push.py         uploading a folder to the Hugging Face Hub

Checking that an adapter fits a base is `mlx_dpo.models.adapter` (the one adapter loader); reading a GGUF
file's header (tokenizer, license) is `mlx_dpo.models.gguf_header`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.export.base import ExportResult, no_stage
from mlx_dpo.export.gguf import GGUF_TYPES, export_gguf
from mlx_dpo.export.hf import export_hf
from mlx_dpo.export.peft import export_peft
from mlx_dpo.settings import EXPORT_FORMATS

FORMATS = tuple(EXPORT_FORMATS)

__all__ = ["FORMATS", "GGUF_TYPES", "ExportResult", "export"]


def export(
    adapter_path: str | Path,
    out: str | Path,
    *,
    format: str = "hf",
    model: str | None = None,
    dequantize: bool = False,
    gguf_type: str = "f16",
    overwrite: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the adapter at `adapter_path` to `out` (a folder; for gguf, the .gguf file).

    `model` is its base (default: the one the adapter was trained on). `dequantize` is for hf (gguf is
    always dense, peft writes no base weights); `gguf_type` for gguf. `on_stage` hears "loading base",
    "fusing" (hf, gguf) and "writing" as those steps begin.
    """
    stage = on_stage or no_stage
    if format == "hf":
        return export_hf(adapter_path, out, model=model, dequantize=dequantize, overwrite=overwrite, on_stage=stage)
    if format == "peft":
        return export_peft(adapter_path, out, model=model, overwrite=overwrite, on_stage=stage)
    if format == "gguf":
        return export_gguf(adapter_path, out, model=model, gguf_type=gguf_type, overwrite=overwrite, on_stage=stage)
    raise MlxDpoError(f"--format {format}: choose from {', '.join(FORMATS)}")
