"""Atomic writes: a crash mid-way leaves either the old file/folder or the new one, never half of one.

Each write goes to a temporary file or folder beside its target and is renamed over it once complete.
A write that fails half-way (a full disk above all: ENOSPC, a quota, a file-size limit, a read-only or
unwritable folder) removes what it had written and raises WriteFailed: one line naming the target, what
went wrong, and that the old file is as it was. MLX's own writers (mx.save_safetensors) report such a
failure as a RuntimeError without an errno; the free space left beside the file tells a full disk then.
Any other exception is a bug, not the environment's, and propagates unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlx_dpo.errors import MlxDpoError

# OSError codes that mean "this cannot be written here", which the user fixes (free space, permissions).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
# MLX's messages for a failed write ("[write] Unable to write N bytes to file.", "[save_safetensors] Failed to open").
_MLX_WRITE_ERROR = re.compile(r"^\[(write|save\w*)\]")
NEARLY_FULL = 1 << 20  # bytes: less free space than this beside a failed write means the disk is full


class WriteFailed(MlxDpoError):
    """A write that could not be finished; the file or folder it was to replace is left as it was."""

    def __init__(self, target: Path, reason: str, existed: bool):
        self.target, self.reason = target, reason
        kept = "the old one is left as it was" if existed else "nothing was written"
        super().__init__(f"{target}: cannot write ({reason}); {kept}")


def _reason(e: BaseException, beside: Path) -> str | None:
    """Why a write failed, for a failure of the environment; None for anything else (a bug: let it through)."""
    if isinstance(e, WriteFailed):
        return e.reason
    if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
        return e.strerror or str(e)
    if isinstance(e, RuntimeError) and _MLX_WRITE_ERROR.match(str(e)):
        try:
            full = shutil.disk_usage(beside).free < NEARLY_FULL
        except OSError:
            full = False
        return os.strerror(errno.ENOSPC) if full else str(e)
    return None


def write_failure(target: Path, e: BaseException, existed: bool, beside: Path | None = None) -> WriteFailed | None:
    """WriteFailed naming `target` for `e`, if `e` is a failed write (see the module docstring), else None.

    Measure before removing the partial file: `beside` (default: target's folder) is where free space is read.
    """
    reason = _reason(e, beside or target.parent)
    if isinstance(e, WriteFailed) and e.target.name != target.name:  # a file inside an atomic folder
        reason = f"{e.target.name}: {reason}"
    return None if reason is None else WriteFailed(target, reason, existed)


def _make_parent(path: Path) -> bool:
    """Create `path`'s folder; returns whether `path` exists already."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        failure = write_failure(path, e, False)
        if failure is None:
            raise
        raise failure from None
    return path.exists()


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temporary file beside `path`; on success fsync and rename it over `path`."""
    path = Path(path)
    existed = _make_parent(path)
    with _as_write_failure(path, existed):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with _as_write_failure(path, existed, cleanup=lambda: Path(tmp).unlink(missing_ok=True)):
        # mkstemp makes the file private; the result is an ordinary file (or keeps the old one's mode).
        os.chmod(tmp, path.stat().st_mode & 0o777 if existed else 0o644)
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)


@contextmanager
def _as_write_failure(path: Path, existed: bool, cleanup: Callable[[], Any] = lambda: None) -> Iterator[None]:
    """Run `cleanup` if the block raises; a failed write becomes WriteFailed naming `path`, others pass through."""
    try:
        yield
    except BaseException as e:
        failure = write_failure(path, e, existed)  # before the cleanup frees space: the reason reads free space
        cleanup()
        if failure is None:
            raise
        raise failure from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that opens the file itself (MLX's
    `save_safetensors`); on success fsync it and rename it over `path`."""
    path = Path(path)
    existed = _make_parent(path)
    # Keep the suffix: some writers append one otherwise (mx.save_safetensors adds ".safetensors").
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    with _as_write_failure(path, existed, cleanup=lambda: tmp.unlink(missing_ok=True)):
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


@contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path` to fill; on success it is renamed to `path`.

    With `overwrite`, an existing `path` is replaced (moved aside first, removed after).
    """
    path = Path(path)
    existed = _make_parent(path)
    with _as_write_failure(path, existed):
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    with _as_write_failure(path, existed, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True)):
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        yield tmp
        if path.exists() and overwrite:
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)  # fails if `path` is a non-empty folder: never clobber
