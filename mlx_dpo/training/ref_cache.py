"""Reference log-probs cached on disk, so the frozen reference never needs a second model in memory.

One SQLite file per reference fingerprint (reference weights + starting adapter + tokenizer and
template + numeric setup) under `$MLX_DPO_HOME/ref-cache`. An entry's key is a hash of the
fingerprint and the exact prompt and completion token ids, so a changed model, template or
truncation simply misses. Each row carries a checksum of its content: a damaged entry is
detected on read and recomputed; a damaged file is moved aside and started afresh.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_dpo.atomic import write_failure
from mlx_dpo.data.database import wait_out_busy
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.paths import ref_cache_dir

Tokens = Sequence[int]
BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's (SQLite's default in Python)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ref_logps "
    "(key TEXT PRIMARY KEY, logp REAL NOT NULL, tokens INTEGER NOT NULL, checksum TEXT NOT NULL)"
)


def _file_digest(path: Path) -> str:
    st = path.stat()
    # The inode catches a file replaced by a same-sized one within the file system's timestamp granularity.
    return _digest_of(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.cache
def _digest_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    """sha256 of a file, remembered for the process by its stat identity: a model's weights are hashed once."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def arrays_digest(arrays: dict[str, mx.array]) -> str:
    """A content hash of named arrays (e.g. a starting adapter's weights)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name].astype(mx.float32))
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def reference_fingerprint(model_path: Path, *, adapter_digest: str | None, numeric: str) -> str:
    """Identity of the reference model: every file that shapes its log-probs, plus how it runs."""
    parts = {
        "weights": {p.name: _file_digest(p) for p in sorted(model_path.glob("model*.safetensors"))},
        "config": _file_digest(model_path / "config.json"),
        "tokenizer": {
            name: _file_digest(model_path / name)
            for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "tokenizer.model")
            if (model_path / name).is_file()
        },
        "adapter": adapter_digest,
        "numeric": numeric,  # e.g. "float32-dequantized-cpu": the same weights run differently elsewhere
        # Before the self-check (fast_path.py) some families' log-probs were computed wrongly (a dropped
        # soft-cap or logit scale, unwindowed masks): values cached then must not be reused.
        "logps": 2,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def entry_key(fingerprint: str, prompt: Tokens, completion: Tokens) -> str:
    h = hashlib.sha256(fingerprint.encode())
    h.update(struct.pack(f"<{len(prompt)}i", *prompt))
    h.update(b"|")
    h.update(struct.pack(f"<{len(completion)}i", *completion))
    return h.hexdigest()


def _checksum(key: str, logp: float, tokens: int) -> str:
    return hashlib.sha256(f"{key}:{logp!r}:{tokens}".encode()).hexdigest()[:16]


def _unusable(path: Path, e: BaseException) -> MlxDpoError | None:
    """One line for a cache file the environment keeps from being written (full disk, read-only, locked...),
    or None for another error. A failed write is rolled back whole: the entries stored before it stay."""
    name = getattr(e, "sqlite_errorname", "") or ""
    if isinstance(e, OSError):
        failure = write_failure(path, e, path.exists())
        return None if failure is None else MlxDpoError(f"reference cache {failure}")
    if not name.startswith(
        (
            "SQLITE_FULL",
            "SQLITE_IOERR",
            "SQLITE_READONLY",
            "SQLITE_CANTOPEN",
            "SQLITE_BUSY",
            "SQLITE_LOCKED",
            "SQLITE_PERM",
        )
    ):
        return None
    if name.startswith("SQLITE_FULL"):
        hint = "the disk is full; free some space or set MLX_DPO_HOME to another disk"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        hint = f"{e}: another mlx-dpo process is writing it; try again when it is done"
    else:
        hint = str(e)
    return MlxDpoError(f"reference cache {path}: cannot use it ({hint}); the entries stored before are kept")


def _is_damage(e: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign file (SQLITE_CORRUPT, SQLITE_NOTADB), not a busy, locked or unwritable one."""
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (11, 26)
    return type(e) is sqlite3.DatabaseError


class RefCache:
    """Summed reference log-prob and token count per (prompt, completion), for one reference."""

    def __init__(self, fingerprint: str, root: Path | None = None):
        self.fingerprint = fingerprint
        self.path = (root or ref_cache_dir()) / f"{fingerprint}.sqlite"
        self.hits = 0
        self.misses = 0
        self.damaged = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except (OSError, sqlite3.DatabaseError) as e:
            failure = _unusable(self.path, e)
            if failure is None:
                raise
            raise failure from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        try:
            # Two processes creating one cache file at once (the app and `online`, two ranks): see wait_out_busy.
            wait_out_busy(lambda: db.execute("PRAGMA journal_mode=WAL"), BUSY_TIMEOUT)
            db.execute(_SCHEMA)
            db.execute("SELECT count(*) FROM ref_logps").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            if not _is_damage(e):  # locked, read-only, disk full: the file itself is fine, so leave it be
                raise
            self._move_aside()
            return self._connect()

    def _move_aside(self) -> None:
        """Not a database any more: keep it for inspection, start a new one."""
        self.path.replace(self.path.with_suffix(".damaged"))
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _recover(self) -> None:
        """Damage found after opening (a page that reads as garbage): set the file aside and start afresh."""
        self._db.close()
        self._move_aside()
        self._db = self._connect()

    def lookup(self, items: Iterable[tuple[Tokens, Tokens]]) -> list[float | None]:
        """Cached summed log-probs for (prompt, completion) items; None where missing or damaged."""
        out: list[float | None] = []
        for prompt, completion in items:
            key = entry_key(self.fingerprint, prompt, completion)
            try:
                row = self._db.execute("SELECT logp, tokens, checksum FROM ref_logps WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError as e:
                if not _is_damage(e):
                    raise
                self._recover()
                row = None
            if row is not None and row[2] == _checksum(key, row[0], row[1]) and row[1] == len(completion):
                self.hits += 1
                out.append(row[0])
            else:
                self.damaged += row is not None
                self.misses += 1
                out.append(None)
        return out

    def store(self, items: Iterable[tuple[Tokens, Tokens, float]]) -> None:
        """Write entries in one transaction: all of them land, or none."""
        rows = []
        for prompt, completion, logp in items:
            key = entry_key(self.fingerprint, prompt, completion)
            # + 0.0 turns -0.0 into 0.0: SQLite reads -0.0 back as 0.0, which would never match its checksum.
            logp = float(logp) + 0.0
            if not math.isfinite(logp):  # SQLite would store NaN as NULL; a bad value must not be cached
                raise ValueError(f"reference log-prob {logp} is not finite; nothing was stored")
            rows.append((key, logp, len(completion), _checksum(key, logp, len(completion))))
        try:
            try:
                self._write(rows)
            except sqlite3.DatabaseError as e:
                if not _is_damage(e):
                    raise
                self._recover()
                self._write(rows)
        except (OSError, sqlite3.DatabaseError) as e:
            failure = _unusable(self.path, e)
            if failure is None:
                raise
            raise failure from None

    def _write(self, rows: list[tuple]) -> None:
        with self._db:  # one transaction: commits on success, rolls back on any error
            self._db.executemany("INSERT OR REPLACE INTO ref_logps VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()
