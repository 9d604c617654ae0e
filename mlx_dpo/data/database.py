"""The SQLite file under a workspace's preference store: opening it, its lock, one transaction per call.

`<workspace>/preferences.sqlite`, opened with the WAL journal and `synchronous=FULL` (mlx_dpo.data.schema),
so every write committed before a method returns survives a crash or kill.

Threads: one connection per store, opened with `check_same_thread=False` and guarded by a lock, so a TUI
may call from a worker thread and the event loop alike; calls are serialized, never interleaved.
Several processes (the app, `mlx-dpo data import`, `mlx-dpo online`) may open the same file: SQLite
serializes their writes (each takes the write lock up front, BEGIN IMMEDIATE), and a writer waits up to
`busy_timeout` seconds (default BUSY_TIMEOUT) for another one's transaction to end; readers never wait
(WAL). A store still locked after that wait is one line saying so and how long it waited (`_error_message`),
never a traceback.

Opening is safe when several processes open one store at once, a new one included (`_open`): the schema is
created or migrated in one transaction that re-reads the version under the write lock (mlx_dpo.data.schema),
and a "busy" that SQLite answers at once instead of waiting (its deadlock rule: two processes switching a new
file to WAL together, one of them is refused) is retried until `busy_timeout`, like any other wait.

SQLite errors the user can act on (busy, disk full, read-only, not a database...) become MlxDpoError
naming the file; any other error is a bug and propagates as it is. A transaction that fails, a full
disk included, is rolled back whole: the store keeps every write committed before it and nothing of it.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from mlx_dpo.data import schema
from mlx_dpo.errors import MlxDpoError

DB_NAME = "preferences.sqlite"
# Seconds a write waits for another process's transaction. A `data import` is one transaction: 20,000 pairs
# held the lock 5 s on a loaded 2-core box, so the app's next save waits out an import of ~100,000.
BUSY_TIMEOUT = 30.0

# SQLite errors the user can do something about (another program holds the file, disk full, read-only...).
_ENVIRONMENT_ERRORS = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PERM",
)

_D = TypeVar("_D", bound="Database")
_T = TypeVar("_T")


class Database:
    """The open preference database of one workspace: one connection, its lock, one `transaction` per call.
    The store's tables (mlx_dpo.data.store) each hold it and run every method in one of its transactions."""

    def __init__(
        self,
        workspace: str | Path,
        *,
        create: bool = True,
        clock: Callable[[], float] = time.time,
        busy_timeout: float | None = None,
    ):
        """Open `<workspace>/preferences.sqlite` and bring its schema up to date.

        A missing folder and database are created, unless `create=False` (then MlxDpoError: for commands
        that only read, where a mistyped --workspace should not leave an empty store behind).
        `clock` gives the timestamps the store writes (tests pass a fake one). `busy_timeout`: seconds a
        write waits for another process's transaction (default BUSY_TIMEOUT, read when the store opens).
        """
        self.workspace = Path(workspace)
        self.clock = clock  # the timestamps the tables write
        self.busy_timeout = BUSY_TIMEOUT if busy_timeout is None else float(busy_timeout)
        self.path = self.workspace / DB_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        if not create and not self.path.exists():
            raise MlxDpoError(f"{self.path}: no preference store here; label or import some pairs first")
        self._make_folder()
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        """Connect and bring the schema up to date, waiting up to busy_timeout for other processes."""
        started = time.monotonic()
        try:
            # isolation_level=None: no implicit transactions; every write opens its own explicitly.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise MlxDpoError(f"{self.path}: cannot open ({e})") from None
        try:
            wait_out_busy(lambda: schema.prepare(conn, self.path), self.busy_timeout)
            return conn
        except BaseException as e:
            conn.close()
            name = _error_name(e)
            if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
                raise MlxDpoError(
                    f"{self.path}: not a usable preference database ({e}); move it aside to start a new store"
                ) from None
            if name.startswith(_ENVIRONMENT_ERRORS):
                waited = time.monotonic() - started
                raise MlxDpoError(_error_message(self.path, e, waited, self.busy_timeout, "cannot open")) from None
            raise

    def _make_folder(self) -> None:
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise MlxDpoError(f"{self.workspace}: is a file; the workspace must be a folder") from None
        except OSError as e:
            raise MlxDpoError(f"{self.workspace}: cannot create the workspace folder ({e.strerror or e})") from None
        if self.path.is_dir():
            raise MlxDpoError(f"{self.path}: is a folder; expected the preference database file")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """SQLite's own check of the whole file: "ok", or the problems it found (one per line)."""
        with self.transaction(write=False) as conn:
            return "\n".join(r[0] for r in conn.execute("PRAGMA integrity_check"))

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed when the block ends, rolled back if it raises.

        Writes take the write lock up front (BEGIN IMMEDIATE) so they never fail half-way on a busy database.
        """
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the preference store is closed")
            conn = self._conn
            started = time.monotonic()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.rollback()
                if _error_name(e).startswith(_ENVIRONMENT_ERRORS):
                    what = "the change was not saved" if write else "the store could not be read"
                    waited = time.monotonic() - started
                    raise MlxDpoError(_error_message(self.path, e, waited, self.busy_timeout, what)) from None
                raise


def wait_out_busy(operation: Callable[[], _T], timeout: float) -> _T:
    """`operation()`, run again while SQLite answers "busy" at once, until `timeout` seconds have passed.

    SQLite's busy wait covers most contention, but not all: where waiting could deadlock (two connections that
    both read a file and then both want it to themselves, as when two processes switch a new file to WAL) it
    refuses one of them at once. That one retries here after a short random pause, as SQLite's own wait would.
    """
    started = time.monotonic()
    while True:
        try:
            return operation()
        except sqlite3.OperationalError as e:
            if not _error_name(e).startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or time.monotonic() - started > timeout:
                raise
        time.sleep(random.uniform(0.005, 0.05))


def _error_message(path: Path, e: BaseException, waited: float, limit: float, what: str) -> str:
    """One line for an SQLite error the user can act on: a store another process keeps locked (with the wait
    that actually happened, and the longest this process would wait), a full disk."""
    name = _error_name(e)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"{path}: the store is in use: another process (the app, `data import` or `online`) kept it "
            f"locked; gave up after waiting {waited:.1f} s (the limit is {limit:g} s); try again when it is done"
        )
    if name.startswith("SQLITE_FULL"):
        return f"{path}: the disk is full: {what}; nothing of it was written and earlier changes are kept"
    return f"{path}: {what} ({e})"


def _error_name(e: BaseException) -> str:
    """ "SQLITE_BUSY" and the like for an sqlite3 error, else ""."""
    name = getattr(e, "sqlite_errorname", None)  # Python 3.11+
    if name is None and type(e) is sqlite3.DatabaseError:  # 3.10: "file is not a database", "malformed"
        return "SQLITE_NOTADB"
    return name or ""
