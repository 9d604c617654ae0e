"""The Export screen's library calls: `mlx-dpo export` and `mlx-dpo push`, run on the calling thread.

The screen runs each in a Textual thread worker. MLX streams are thread-local, so one thread does the whole
export (imports, model load, fuse, write): no MLX array crosses threads. The library's export code is
loaded by the first use of `mlx_dpo.api.export` / `push_folder`, on that thread: it pulls in mlx and mlx_lm,
which the app must not load before its first screen (nor at all, for a session that never exports).
"""

from __future__ import annotations

from collections.abc import Callable

from mlx_dpo import api


def run_export(
    adapter: str,
    out: str,
    *,
    fmt: str,
    model: str | None,
    dequantize: bool,
    gguf_type: str,
    overwrite: bool,
    report: Callable[[str], None],
):
    """What `mlx-dpo export` does (the same `mlx_dpo.export.export` call); `report(stage)` is called as the
    stages ("loading base", ...) begin."""
    return api.export(
        adapter,
        out,
        format=fmt,
        model=model,
        dequantize=dequantize,
        gguf_type=gguf_type,
        overwrite=overwrite,
        on_stage=report,
    )


def push_folder(folder: str, repo: str, *, private: bool, message: str | None) -> str:
    """What `mlx-dpo push` does: upload `folder` to the Hub repo `repo`; returns the commit URL."""
    return api.push_folder(folder, repo, private=private, message=message)
