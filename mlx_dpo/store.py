"""The preference store: every label (pair, tie/skip, sampled candidate) in one SQLite file of a workspace.

`<workspace>/preferences.sqlite` holds:
  meta          key/value; `schema_version` says which migrations have run
  pairs         prompt (JSON messages), chosen, rejected, where they came from, split, note, timestamps
  skips         prompts judged a tie or skipped (kept with their answers, but no pair)
  candidates    sampled answers waiting to be judged
  label_actions the labeling history `undo_last_label` walks back (newest first)

Durability comes first: every write is one transaction, committed before the method returns, with the
WAL journal and `synchronous=FULL`, so a label the app has reported "saved" survives a crash or kill.

Threads: one connection per store, opened with `check_same_thread=False` and guarded by a lock, so a TUI
may call from a worker thread and the event loop alike; calls are serialized, never interleaved.
Several processes (the TUI and `mlx-dpo data import`) may open the same store: SQLite serializes their
writes, and a writer waits up to `BUSY_TIMEOUT` seconds for another one to finish.

Rows are checked by the same rules as JSONL files (mlx_dpo.pairs), so whatever the store accepts it can
export, and whatever it exports it can import again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, get_args

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.pairs import (
    PreferencePair,
    Style,
    describe_problems,
    load_pairs,
    pair_id as _content_key,  # the id a file row without one gets: same content, same key
    parse_completion,
    parse_prompt,
    write_pairs,
)

DB_NAME = "preferences.sqlite"
BUSY_TIMEOUT = 10.0  # seconds a write waits for another process's write to finish

Origin = Literal["typed", "sampled", "imported", "compared"]
Split = Literal["train", "valid"]
ORIGINS: tuple[str, ...] = get_args(Origin)
SPLITS: tuple[str, ...] = get_args(Split)
STYLES: tuple[str, ...] = get_args(Style)

# Columns read back, named rather than `SELECT *` so a migration that adds a column breaks no reader.
_PAIR_COLUMNS = "id, prompt, chosen, rejected, origin, sampler, created_at, updated_at, note, split, external_id"
_SKIP_COLUMNS = "id, prompt, reason, created_at, answers, sampler"
_CANDIDATE_COLUMNS = "id, prompt, answers, sampler, created_at"


# --- records ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPair:
    id: int
    prompt: list[dict[str, str]]  # messages; optional leading system message, last message from the user
    chosen: str
    rejected: str
    origin: str
    sampler: str | None  # which model/adapter produced the answers
    created_at: float  # unix time
    updated_at: float
    note: str | None
    split: str
    external_id: str | None  # id from an imported file

    def to_preference_pair(self) -> PreferencePair:
        return PreferencePair(
            id=self.external_id or f"store-{self.id}",
            prompt=[dict(m) for m in self.prompt],
            chosen=self.chosen,
            rejected=self.rejected,
            source=f"stored pair {self.id}",  # where training errors point
        )


@dataclass(frozen=True)
class Skip:
    """A prompt judged a tie or skipped: kept (with the answers judged, if given), but no pair saved."""

    id: int
    prompt: list[dict[str, str]]
    reason: str
    created_at: float
    answers: list[str] = field(default_factory=list)  # so an undo can put them back
    sampler: str | None = None


@dataclass(frozen=True)
class Candidate:
    """Answers sampled for a prompt but not yet judged."""

    id: int
    prompt: list[dict[str, str]]
    answers: list[str]
    sampler: str | None
    created_at: float


@dataclass(frozen=True)
class UndoResult:
    kind: Literal["pair", "skip"]
    pair: StoredPair | None
    skip: Skip | None


@dataclass
class ImportResult:
    added: int
    duplicates: int  # pairs already in the store (same prompt, chosen and rejected), not added again
    skipped_invalid: int  # rows dropped by --skip-invalid
    errors: list[str]  # "file:line: field '...': message" for each problem in the dropped rows


# --- schema -----------------------------------------------------------------------------------------------

Migration = Callable[[sqlite3.Connection], None]


def _sql(*statements: str) -> Migration:
    """A migration made of SQL statements (run one by one: executescript would commit mid-migration)."""

    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return run


# MIGRATIONS[i] takes a store from schema version i to i + 1. Append only: never edit one that has shipped.
# Version 0 is a database with none of our tables (a new or empty file).
MIGRATIONS: list[Migration] = [
    _sql(
        """CREATE TABLE pairs (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so "store-N" ids stay unique
            prompt      TEXT NOT NULL,                      -- JSON list of {"role", "content"} messages
            chosen      TEXT NOT NULL,
            rejected    TEXT NOT NULL,
            content_key TEXT NOT NULL,                      -- mlx_dpo.pairs.pair_id: finds duplicates
            origin      TEXT NOT NULL CHECK (origin IN ('typed', 'sampled', 'imported', 'compared')),
            sampler     TEXT,
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL,
            note        TEXT,
            split       TEXT NOT NULL CHECK (split IN ('train', 'valid')),
            external_id TEXT
        )""",
        "CREATE INDEX pairs_content_key ON pairs (content_key)",
        "CREATE INDEX pairs_split ON pairs (split)",
        """CREATE TABLE skips (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            prompt     TEXT NOT NULL,                       -- JSON messages
            answers    TEXT NOT NULL,                       -- JSON list of strings (may be empty)
            sampler    TEXT,
            reason     TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE candidates (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            prompt     TEXT NOT NULL,
            answers    TEXT NOT NULL,
            sampler    TEXT,
            created_at REAL NOT NULL
        )""",
        # One row per labeling action; deleting the pair or skip removes its row (so it leaves the undo history).
        """CREATE TABLE label_actions (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            pair_id INTEGER REFERENCES pairs (id) ON DELETE CASCADE,
            skip_id INTEGER REFERENCES skips (id) ON DELETE CASCADE,
            CHECK ((pair_id IS NULL) <> (skip_id IS NULL))
        )""",
        "CREATE INDEX label_actions_pair ON label_actions (pair_id)",
        "CREATE INDEX label_actions_skip ON label_actions (skip_id)",
    ),
    # Incremental training rounds (mlx_dpo.rounds): one row per round, its id being the version number (v<id>).
    _sql(
        """CREATE TABLE rounds (
            id           INTEGER PRIMARY KEY,              -- the version number: adapters/v<id>
            adapter_path TEXT NOT NULL,
            settings     TEXT NOT NULL,                    -- JSON
            metrics      TEXT NOT NULL,                    -- JSON: the last step report (ref_cache/* included)
            status       TEXT NOT NULL CHECK (status IN ('finished', 'cancelled', 'failed')),
            created_at   REAL NOT NULL
        )""",
        """CREATE TABLE round_pairs (
            round_id INTEGER NOT NULL REFERENCES rounds (id) ON DELETE CASCADE,
            pair_id  INTEGER NOT NULL,                     -- no foreign key: deleting a pair keeps the history
            PRIMARY KEY (round_id, pair_id)
        )""",
        "CREATE INDEX round_pairs_pair ON round_pairs (pair_id)",
    ),
]

SCHEMA_VERSION: int = len(MIGRATIONS)

# SQLite errors the user can do something about (another program holds the file, disk full, read-only...).
_ENVIRONMENT_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR",
                       "SQLITE_CANTOPEN", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PERM")


# --- the store --------------------------------------------------------------------------------------------


class PreferenceStore:
    """All preference data of one workspace folder. Every method that writes has committed when it returns."""

    def __init__(self, workspace: str | Path, *, create: bool = True, clock: Callable[[], float] = time.time):
        """Open `<workspace>/preferences.sqlite` and bring its schema up to date.

        A missing folder and database are created, unless `create=False` (then MlxDpoError: for commands
        that only read, where a mistyped --workspace should not leave an empty store behind).
        `clock` gives the timestamps (tests pass a fake one).
        """
        self.workspace = Path(workspace)
        self.path = self.workspace / DB_NAME
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        if not create and not self.path.exists():
            raise MlxDpoError(f"{self.path}: no preference store here; label or import some pairs first")
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise MlxDpoError(f"{self.workspace}: is a file; the workspace must be a folder") from None
        except OSError as e:
            raise MlxDpoError(f"{self.workspace}: cannot create the workspace folder ({e.strerror or e})") from None
        if self.path.is_dir():
            raise MlxDpoError(f"{self.path}: is a folder; expected the preference database file")
        try:
            # isolation_level=None: no implicit transactions; every write below opens its own explicitly.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise MlxDpoError(f"{self.path}: cannot open ({e})") from None
        try:
            self._open(conn)
        except BaseException as e:
            conn.close()
            name = _error_name(e)
            if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
                raise MlxDpoError(
                    f"{self.path}: not a usable preference database ({e}); move it aside to start a new store"
                ) from None
            if name.startswith(_ENVIRONMENT_ERRORS):
                raise MlxDpoError(f"{self.path}: cannot open ({e})") from None
            raise
        self._conn = conn

    @classmethod
    def default_workspace(cls) -> Path:
        return Path("mlx-dpo-workspace")

    def _open(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA foreign_keys = ON")  # per connection; label_actions relies on its cascades
        # Refuse a newer or foreign database before changing anything in it (journal_mode rewrites the header).
        version = _schema_version(conn, self.path)
        self._check_version(version)
        conn.execute("PRAGMA journal_mode = WAL")  # persistent; readers never block the writer
        conn.execute("PRAGMA synchronous = FULL")  # fsync the WAL at every commit: a saved label stays saved
        if version < len(MIGRATIONS):
            self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Run the missing migrations and record the new version, all in one transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _schema_version(conn, self.path)  # again, now holding the write lock: another process
            self._check_version(version)  # may have migrated meanwhile
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for migrate in MIGRATIONS[version:]:
                migrate(conn)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(len(MIGRATIONS)),))
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise

    def _check_version(self, version: int) -> None:
        if version > len(MIGRATIONS):
            raise MlxDpoError(
                f"{self.path}: written by a newer mlx-dpo (schema version {version}; this one reads up to "
                f"{len(MIGRATIONS)}); upgrade mlx-dpo to open it"
            )

    # --- connection and transactions -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed when the block ends, rolled back if it raises.

        Writes take the write lock up front (BEGIN IMMEDIATE) so they never fail half-way on a busy database.
        """
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the preference store is closed")
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.rollback()
                if _error_name(e).startswith(_ENVIRONMENT_ERRORS):
                    raise MlxDpoError(f"{self.path}: {e}") from e
                raise

    # --- pairs ---------------------------------------------------------------------------------------------

    def add_pair(
        self,
        prompt: str | list[dict[str, str]],
        chosen: str,
        rejected: str,
        *,
        origin: Origin = "typed",
        sampler: str | None = None,
        note: str | None = None,
        split: Split = "train",
        external_id: str | None = None,
        label: bool = True,
        candidate_id: int | None = None,
    ) -> StoredPair:
        """Save a pair (committed on return). Raises MlxDpoError naming the problem if it is not a valid pair.

        `label` records it as a labeling action for `undo_last_label`. `candidate_id`, if given, is deleted in
        the same transaction (if still there), so a crash can never leave both the judged candidate and its pair.
        """
        messages, chosen, rejected = _checked_pair(prompt, chosen, rejected)
        _check_choice("origin", origin, ORIGINS)
        _check_choice("split", split, SPLITS)
        now = self._clock()
        with self._transaction() as conn:
            new_id = _insert_pair(conn, messages, chosen, rejected, origin, sampler, _clean_note(note), split,
                                  None if external_id is None else str(external_id), now)
            if label:
                conn.execute("INSERT INTO label_actions (pair_id) VALUES (?)", (new_id,))
            if candidate_id is not None:
                conn.execute("DELETE FROM candidates WHERE id = ?", (candidate_id,))
            return _get_pair(conn, new_id)

    def update_pair(
        self,
        pair_id: int,
        *,
        prompt: str | list[dict[str, str]] | None = None,
        chosen: str | None = None,
        rejected: str | None = None,
        note: str | None = None,
        split: Split | None = None,
    ) -> StoredPair:
        """Change the fields given (None leaves a field as it is; note="" clears the note); bumps updated_at."""
        if split is not None:
            _check_choice("split", split, SPLITS)
        with self._transaction() as conn:
            return self._update(conn, pair_id, prompt=prompt, chosen=chosen, rejected=rejected, note=note, split=split)

    def swap_pair(self, pair_id: int) -> StoredPair:
        """Exchange chosen and rejected (the label was the wrong way round)."""
        with self._transaction() as conn:
            old = _get_pair(conn, pair_id)
            return self._update(conn, pair_id, chosen=old.rejected, rejected=old.chosen)

    def _update(self, conn: sqlite3.Connection, pair_id: int, *, prompt: Any = None, chosen: str | None = None,
                rejected: str | None = None, note: str | None = None, split: str | None = None) -> StoredPair:
        old = _get_pair(conn, pair_id)
        messages, new_chosen, new_rejected = _checked_pair(
            old.prompt if prompt is None else prompt,
            old.chosen if chosen is None else chosen,
            old.rejected if rejected is None else rejected,
        )
        conn.execute(
            "UPDATE pairs SET prompt = ?, chosen = ?, rejected = ?, content_key = ?, note = ?, split = ?, "
            "updated_at = ? WHERE id = ?",
            (
                _dumps(messages), new_chosen, new_rejected, _content_key(messages, new_chosen, new_rejected),
                old.note if note is None else _clean_note(note), old.split if split is None else split,
                self._clock(), pair_id,
            ),
        )
        return _get_pair(conn, pair_id)

    def delete_pair(self, pair_id: int) -> None:
        with self._transaction() as conn:
            if conn.execute("DELETE FROM pairs WHERE id = ?", (pair_id,)).rowcount == 0:
                raise MlxDpoError(f"no stored pair with id {pair_id}")

    def get_pair(self, pair_id: int) -> StoredPair:
        with self._transaction(write=False) as conn:
            return _get_pair(conn, pair_id)

    def list_pairs(
        self, *, search: str | None = None, split: Split | None = None, origin: Origin | None = None
    ) -> list[StoredPair]:
        """Pairs newest first, optionally only one split / origin and only those whose prompt, answers or note
        contain `search` (ignoring case)."""
        where, params = [], []
        if split is not None:
            _check_choice("split", split, SPLITS)
            where.append("split = ?")
            params.append(split)
        if origin is not None:
            _check_choice("origin", origin, ORIGINS)
            where.append("origin = ?")
            params.append(origin)
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_PAIR_COLUMNS} FROM pairs {condition} ORDER BY created_at DESC, id DESC"
        with self._transaction(write=False) as conn:
            pairs = [_pair_from_row(r) for r in conn.execute(sql, params)]
        needle = (search or "").strip().casefold()
        # Searched in Python, not with SQL LIKE: LIKE ignores case for ASCII only, and the prompt column is
        # JSON (keys, escapes) rather than the text the user sees. A store holds thousands of pairs, not millions.
        return [p for p in pairs if needle in _searchable_text(p)] if needle else pairs

    def count_pairs(self, split: Split | None = None) -> int:
        if split is not None:
            _check_choice("split", split, SPLITS)
        with self._transaction(write=False) as conn:
            if split is None:
                return conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM pairs WHERE split = ?", (split,)).fetchone()[0]

    def training_pairs(self, split: Split = "train") -> list[PreferencePair]:
        """The pairs of one split, oldest first, ready for `mlx_dpo.api.train` / `evaluate`."""
        _check_choice("split", split, SPLITS)
        return self._preference_pairs(split)

    # --- incremental training rounds (mlx_dpo.rounds) --------------------------------------------------------

    def untrained_pairs(self, split: Split = "train") -> list[StoredPair]:
        """Pairs of `split` (oldest first) that no finished round has trained on."""
        _check_choice("split", split, SPLITS)
        sql = (f"SELECT {_PAIR_COLUMNS} FROM pairs WHERE split = ? AND id NOT IN (SELECT rp.pair_id FROM round_pairs rp "
               "JOIN rounds r ON r.id = rp.round_id WHERE r.status = 'finished') ORDER BY id")
        with self._transaction(write=False) as conn:
            return [_pair_from_row(r) for r in conn.execute(sql, (split,))]

    def trained_pairs(self, split: Split = "train") -> list[StoredPair]:
        """Pairs of `split` (oldest first) that some finished round has trained on."""
        _check_choice("split", split, SPLITS)
        sql = (f"SELECT {_PAIR_COLUMNS} FROM pairs WHERE split = ? AND id IN (SELECT rp.pair_id FROM round_pairs rp "
               "JOIN rounds r ON r.id = rp.round_id WHERE r.status = 'finished') ORDER BY id")
        with self._transaction(write=False) as conn:
            return [_pair_from_row(r) for r in conn.execute(sql, (split,))]

    def record_round(self, version: int, adapter_path: str | Path, settings: dict, metrics: dict, status: str,
                     pair_ids: Iterable[int]) -> dict[str, Any]:
        """Record round `version` (status finished, cancelled or failed) with the pairs it trained on."""
        _check_choice("status", status, ("finished", "cancelled", "failed"))
        with self._transaction() as conn:
            conn.execute("INSERT INTO rounds (id, adapter_path, settings, metrics, status, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (version, str(adapter_path), json.dumps(settings), json.dumps(metrics), status, self._clock()))
            conn.executemany("INSERT OR IGNORE INTO round_pairs (round_id, pair_id) VALUES (?, ?)",
                             [(version, int(i)) for i in pair_ids])
        return self.get_round(version)

    def get_round(self, version: int) -> dict[str, Any]:
        return next((r for r in self.list_rounds() if r["version"] == version), None) or _missing_round(version)

    def list_rounds(self) -> list[dict[str, Any]]:
        """Every recorded round, oldest first: version, adapter_path, settings, metrics, status, created_at, pair_ids."""
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT id, adapter_path, settings, metrics, status, created_at FROM rounds ORDER BY id").fetchall()
            pairs: dict[int, list[int]] = {}
            for round_id, pair_id in conn.execute("SELECT round_id, pair_id FROM round_pairs ORDER BY round_id, pair_id"):
                pairs.setdefault(round_id, []).append(pair_id)
        return [{"version": r[0], "adapter_path": r[1], "settings": json.loads(r[2]), "metrics": json.loads(r[3]),
                 "status": r[4], "created_at": r[5], "pair_ids": pairs.get(r[0], [])} for r in rows]

    def latest_finished_round(self) -> dict[str, Any] | None:
        finished = [r for r in self.list_rounds() if r["status"] == "finished"]
        return finished[-1] if finished else None

    # --- skips and undo ------------------------------------------------------------------------------------

    def add_skip(
        self,
        prompt: str | list[dict[str, str]],
        reason: str = "tie",
        *,
        answers: list[str] | None = None,
        sampler: str | None = None,
        candidate_id: int | None = None,
    ) -> Skip:
        """Record a prompt judged a tie (or skipped) as a labeling action; committed on return.

        `answers` (the ones judged) are kept so an undo can show them again; `candidate_id` as in add_pair.
        """
        messages = _checked_prompt(prompt)
        answers = _checked_answers(answers or [], allow_empty=True)
        if not isinstance(reason, str) or not reason.strip():
            raise MlxDpoError("a skip needs a reason (e.g. 'tie')")
        with self._transaction() as conn:
            skip_id = conn.execute(
                "INSERT INTO skips (prompt, answers, sampler, reason, created_at) VALUES (?, ?, ?, ?, ?)",
                (_dumps(messages), _dumps(answers), sampler, reason, self._clock()),
            ).lastrowid
            conn.execute("INSERT INTO label_actions (skip_id) VALUES (?)", (skip_id,))
            if candidate_id is not None:
                conn.execute("DELETE FROM candidates WHERE id = ?", (candidate_id,))
            return _get_skip(conn, skip_id)

    def list_skips(self) -> list[Skip]:
        """Skips newest first."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"SELECT {_SKIP_COLUMNS} FROM skips ORDER BY created_at DESC, id DESC")
            return [_skip_from_row(r) for r in rows]

    def undo_last_label(self) -> UndoResult | None:
        """Delete the pair or skip saved by the latest labeling action still in the store and return it (so
        the UI can show its prompt and answers again); None when there is nothing to undo.

        The history is kept in the database: it survives restarts, and pairs deleted meanwhile leave it.
        """
        with self._transaction() as conn:
            row = conn.execute("SELECT pair_id, skip_id FROM label_actions ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                return None
            pair_id, skip_id = row
            if pair_id is not None:
                pair = _get_pair(conn, pair_id)
                conn.execute("DELETE FROM pairs WHERE id = ?", (pair_id,))  # its label_actions row cascades
                return UndoResult("pair", pair, None)
            skip = _get_skip(conn, skip_id)
            conn.execute("DELETE FROM skips WHERE id = ?", (skip_id,))
            return UndoResult("skip", None, skip)

    # --- candidates ----------------------------------------------------------------------------------------

    def add_candidate(
        self, prompt: str | list[dict[str, str]], answers: list[str], sampler: str | None = None
    ) -> Candidate:
        """Keep sampled answers until they are judged (so a restart does not lose them)."""
        messages = _checked_prompt(prompt)
        answers = _checked_answers(answers, allow_empty=False)
        with self._transaction() as conn:
            cid = conn.execute(
                "INSERT INTO candidates (prompt, answers, sampler, created_at) VALUES (?, ?, ?, ?)",
                (_dumps(messages), _dumps(answers), sampler, self._clock()),
            ).lastrowid
            row = conn.execute(f"SELECT {_CANDIDATE_COLUMNS} FROM candidates WHERE id = ?", (cid,)).fetchone()
            return _candidate_from_row(row)

    def list_candidates(self) -> list[Candidate]:
        """Candidates oldest first: the order they are to be judged in."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"SELECT {_CANDIDATE_COLUMNS} FROM candidates ORDER BY id")
            return [_candidate_from_row(r) for r in rows]

    def delete_candidate(self, candidate_id: int) -> None:
        with self._transaction() as conn:
            if conn.execute("DELETE FROM candidates WHERE id = ?", (candidate_id,)).rowcount == 0:
                raise MlxDpoError(f"no candidate with id {candidate_id}")

    # --- files ---------------------------------------------------------------------------------------------

    def import_jsonl(self, path: str | Path, *, skip_invalid: bool = False, split: Split = "train") -> ImportResult:
        """Add the pairs of a JSONL file (TRL standard or conversational) with origin "imported".

        All or nothing: a bad file (unless `skip_invalid`) or any failure adds no pair at all. Pairs already
        in the store (same prompt, chosen and rejected) are counted as duplicates and not added again.
        """
        _check_choice("split", split, SPLITS)
        loaded = load_pairs(path, skip_invalid=skip_invalid)  # raises MlxDpoError naming file:line:field
        result = self.import_pairs(loaded.pairs, split=split)
        result.skipped_invalid, result.errors = loaded.skipped, [str(e) for e in loaded.errors]
        return result

    def import_pairs(self, pairs: Iterable[PreferencePair], *, split: Split = "train") -> ImportResult:
        """`import_jsonl` for pairs already read (by `load_pairs`, say); their ids become `external_id`."""
        _check_choice("split", split, SPLITS)
        checked = [(_checked_pair(p.prompt, p.chosen, p.rejected), p.id) for p in pairs]
        added = duplicates = 0
        now = self._clock()
        with self._transaction() as conn:
            for (prompt, chosen, rejected), external_id in checked:
                key = _content_key(prompt, chosen, rejected)
                if conn.execute("SELECT 1 FROM pairs WHERE content_key = ? LIMIT 1", (key,)).fetchone():
                    duplicates += 1  # also catches a repeat within `pairs`: it was inserted just before
                    continue
                _insert_pair(conn, prompt, chosen, rejected, "imported", None, None, split, external_id, now)
                added += 1
        return ImportResult(added, duplicates, 0, [])

    def export_jsonl(self, path: str | Path, *, split: Split | None = None, style: Style = "conversational") -> int:
        """Write the pairs (one split, or all) oldest first as JSONL, atomically; returns how many.

        Every row carries its id, so importing the file elsewhere and exporting again gives the same file.
        """
        if split is not None:
            _check_choice("split", split, SPLITS)
        _check_choice("style", style, STYLES)
        pairs = self._preference_pairs(split)
        try:
            write_pairs(path, pairs, style)  # checks every pair fits `style` before writing anything
        except OSError as e:
            raise MlxDpoError(f"{path}: cannot write ({e.strerror or e})") from None
        return len(pairs)

    def _preference_pairs(self, split: str | None) -> list[PreferencePair]:
        sql = f"SELECT {_PAIR_COLUMNS} FROM pairs" + (" WHERE split = ?" if split else "") + " ORDER BY id"
        with self._transaction(write=False) as conn:
            stored = [_pair_from_row(r) for r in conn.execute(sql, (split,) if split else ())]
        # Ids must be unique in a file (load_pairs refuses repeats). An imported "store-7" can meet this
        # store's own pair 7, or one file's ids another's: later ones get their store id appended.
        pairs, seen = [], set()
        for s in stored:
            p = s.to_preference_pair()
            if p.id in seen:
                p = PreferencePair(f"{p.id}-store-{s.id}", p.prompt, p.chosen, p.rejected, p.source)
            seen.add(p.id)
            pairs.append(p)
        return pairs

    # --- overview and health -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts by split and origin, skips, candidates, plus schema version, journal mode and path."""
        with self._transaction(write=False) as conn:
            by_split = dict(conn.execute("SELECT split, COUNT(*) FROM pairs GROUP BY split").fetchall())
            by_origin = dict(conn.execute("SELECT origin, COUNT(*) FROM pairs GROUP BY origin").fetchall())
            skips = conn.execute("SELECT COUNT(*) FROM skips").fetchone()[0]
            candidates = conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
            version = _schema_version(conn, self.path)
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return {
            "path": str(self.path),
            "schema_version": version,
            "journal_mode": journal,
            "pairs": sum(by_split.values()),
            "by_split": {s: by_split.get(s, 0) for s in SPLITS},
            "by_origin": {o: by_origin.get(o, 0) for o in ORIGINS},
            "skips": skips,
            "candidates": candidates,
        }

    def integrity_check(self) -> str:
        """SQLite's own check of the whole file: "ok", or the problems it found (one per line)."""
        with self._transaction(write=False) as conn:
            return "\n".join(r[0] for r in conn.execute("PRAGMA integrity_check"))


# --- helpers ----------------------------------------------------------------------------------------------


def _missing_round(version: int):
    raise MlxDpoError(f"no training round v{version}")


def _error_name(e: BaseException) -> str:
    """"SQLITE_BUSY" and the like for an sqlite3 error, else ""."""
    name = getattr(e, "sqlite_errorname", None)  # Python 3.11+
    if name is None and type(e) is sqlite3.DatabaseError:  # 3.10: "file is not a database", "malformed"
        return "SQLITE_NOTADB"
    return name or ""


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        if tables - {"sqlite_sequence"}:
            raise MlxDpoError(f"{path}: holds other tables, not an mlx-dpo preference store; choose another workspace")
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise MlxDpoError(f"{path}: the meta table has no valid schema_version; the store is damaged") from None


def _checked_prompt(prompt: Any) -> list[dict[str, str]]:
    problems: list[tuple[str | None, str]] = []
    messages = parse_prompt(prompt, "prompt", problems)
    if problems:
        raise MlxDpoError(describe_problems(problems))
    return messages


def _checked_pair(prompt: Any, chosen: Any, rejected: Any) -> tuple[list[dict[str, str]], str, str]:
    """The pair as stored, or MlxDpoError listing every problem (same rules as a JSONL row)."""
    problems: list[tuple[str | None, str]] = []
    messages = parse_prompt(prompt, "prompt", problems)
    answers = []
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if isinstance(value, str):
            answers.append(parse_completion(value, name, problems))
        else:  # the file reader would also take a message list; the store's API takes the text
            problems.append((name, f"expected a string, got {type(value).__name__}"))
    if problems:
        raise MlxDpoError(describe_problems(problems))
    good_chosen, good_rejected = answers
    if good_chosen.strip() == good_rejected.strip():
        raise MlxDpoError("chosen and rejected are identical; a pair needs two different answers")
    return messages, good_chosen, good_rejected


def _checked_answers(answers: Any, *, allow_empty: bool) -> list[str]:
    if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
        raise MlxDpoError("answers must be a list of strings")
    if not answers and not allow_empty:
        raise MlxDpoError("a candidate needs at least one answer")
    return list(answers)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise MlxDpoError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")


def _clean_note(note: str | None) -> str | None:
    return note if note and note.strip() else None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _insert_pair(conn: sqlite3.Connection, prompt: list[dict[str, str]], chosen: str, rejected: str, origin: str,
                 sampler: str | None, note: str | None, split: str, external_id: str | None, now: float) -> int:
    return conn.execute(
        "INSERT INTO pairs (prompt, chosen, rejected, content_key, origin, sampler, created_at, updated_at, note, "
        "split, external_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (_dumps(prompt), chosen, rejected, _content_key(prompt, chosen, rejected), origin, sampler, now, now, note,
         split, external_id),
    ).lastrowid


def _get_pair(conn: sqlite3.Connection, pair_id: int) -> StoredPair:
    row = conn.execute(f"SELECT {_PAIR_COLUMNS} FROM pairs WHERE id = ?", (pair_id,)).fetchone()
    if row is None:
        raise MlxDpoError(f"no stored pair with id {pair_id}")
    return _pair_from_row(row)


# Rows come back in the order of the _*_COLUMNS lists, which follow the dataclasses' fields.
def _pair_from_row(r: tuple) -> StoredPair:
    return StoredPair(r[0], json.loads(r[1]), *r[2:])


def _get_skip(conn: sqlite3.Connection, skip_id: int) -> Skip:
    return _skip_from_row(conn.execute(f"SELECT {_SKIP_COLUMNS} FROM skips WHERE id = ?", (skip_id,)).fetchone())


def _skip_from_row(r: tuple) -> Skip:
    id_, prompt, reason, created, answers, sampler = r
    return Skip(id_, json.loads(prompt), reason, created, json.loads(answers), sampler)


def _candidate_from_row(r: tuple) -> Candidate:
    id_, prompt, answers, sampler, created = r
    return Candidate(id_, json.loads(prompt), json.loads(answers), sampler, created)


def _searchable_text(p: StoredPair) -> str:
    parts = [m["content"] for m in p.prompt] + [p.chosen, p.rejected, p.note or ""]
    return "\n".join(parts).casefold()
