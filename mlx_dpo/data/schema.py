"""The preference store's SQLite schema: its tables, the migrations that build them, and the version check.

`meta.schema_version` says how many of MIGRATIONS have run. Opening a store runs the missing ones, in one
transaction with the version bump, so a store is always at a version some mlx-dpo wrote; a store written by
a newer mlx-dpo is refused before anything in it changes.

MIGRATIONS is read at call time (never copied), so a test may append one to see it run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from mlx_dpo.errors import MlxDpoError

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
            content_key TEXT NOT NULL,                      -- mlx_dpo.data.pairs.pair_id: finds duplicates
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
    # Incremental training rounds (mlx_dpo.training.rounds): one row per round, its id being the version number (v<id>).
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
    # Single answers marked good or bad, for KTO (mlx_dpo.data.feedback_records), and the rounds that trained them.
    _sql(
        """CREATE TABLE feedback (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            prompt     TEXT NOT NULL,                        -- JSON messages
            completion TEXT NOT NULL,
            label      INTEGER NOT NULL CHECK (label IN (0, 1)),  -- 1: good (desirable)
            sampler    TEXT,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE round_feedback (
            round_id    INTEGER NOT NULL REFERENCES rounds (id) ON DELETE CASCADE,
            feedback_id INTEGER NOT NULL,                   -- no foreign key: deleting a label keeps the history
            PRIMARY KEY (round_id, feedback_id)
        )""",
    ),
    # Who judged a pair or skip and what produced its answers (mlx_dpo.online), and how far an online run has
    # come through its prompt file (mlx_dpo.data.online_records). Existing rows: judged by a person, version unknown.
    _sql(
        "ALTER TABLE pairs ADD COLUMN judge TEXT",  # NULL: a person; else the judge's name ("score:...")
        "ALTER TABLE pairs ADD COLUMN version TEXT",  # "base" or "v<N>": the version that sampled the answers
        "ALTER TABLE pairs ADD COLUMN shown_first TEXT CHECK (shown_first IN ('chosen', 'rejected'))",  # shown as A
        "ALTER TABLE pairs ADD COLUMN overruled TEXT",  # the judge a person overruled (judge is then NULL)
        "ALTER TABLE skips ADD COLUMN judge TEXT",
        "ALTER TABLE skips ADD COLUMN version TEXT",  # (a skip keeps its answers in the order shown)
        # One row per prompt of a prompt file an online run has judged, written with its pair or skip.
        """CREATE TABLE online_prompts (
            source     TEXT NOT NULL,                     -- the prompt file's resolved path
            position   INTEGER NOT NULL,                  -- the prompt's index in the file (0-based)
            prompt_key TEXT NOT NULL,                     -- hash of its messages: an edited file is noticed
            round      INTEGER NOT NULL,                  -- the online round (1-based) that judged it
            pair_id    INTEGER REFERENCES pairs (id) ON DELETE SET NULL,
            skip_id    INTEGER REFERENCES skips (id) ON DELETE SET NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (source, position)
        )""",
    ),
    # Rounds that help (mlx_dpo.data.answers, mlx_dpo.online.pairing, mlx_dpo.training.acceptance): whether each
    # stored answer finished or was cut at max tokens, every comparison a judge made to pick a prompt's pair, and
    # whether a round was kept. Existing rows: finished answers, no comparisons, rounds with no decision (kept).
    _sql(
        "ALTER TABLE pairs ADD COLUMN chosen_finished INTEGER NOT NULL DEFAULT 1 CHECK (chosen_finished IN (0, 1))",
        "ALTER TABLE pairs ADD COLUMN rejected_finished INTEGER NOT NULL DEFAULT 1 CHECK (rejected_finished IN (0, 1))",
        "ALTER TABLE skips ADD COLUMN finished TEXT",  # JSON list of 0/1 beside `answers`; NULL: all finished
        "ALTER TABLE candidates ADD COLUMN finished TEXT",  # the same
        "ALTER TABLE feedback ADD COLUMN finished INTEGER NOT NULL DEFAULT 1 CHECK (finished IN (0, 1))",
        # One row per comparison a judge made for a prompt (a knockout makes N - 1), written with its pair or skip.
        """CREATE TABLE comparisons (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            pair_id     INTEGER REFERENCES pairs (id) ON DELETE CASCADE,
            skip_id     INTEGER REFERENCES skips (id) ON DELETE CASCADE,
            seq         INTEGER NOT NULL,                     -- its place in the prompt's knockout (0-based)
            first       TEXT NOT NULL,                        -- the answer shown to the judge first
            second      TEXT NOT NULL,
            first_finished  INTEGER NOT NULL CHECK (first_finished IN (0, 1)),
            second_finished INTEGER NOT NULL CHECK (second_finished IN (0, 1)),
            choice      INTEGER CHECK (choice IN (0, 1, 2)),  -- the judge's verdict; NULL: it skipped
            counted     INTEGER NOT NULL CHECK (counted IN (0, 1)),  -- 0: it broke the finished-answer rule
            note        TEXT,
            judge       TEXT NOT NULL,
            created_at  REAL NOT NULL,
            CHECK ((pair_id IS NULL) <> (skip_id IS NULL))
        )""",
        "CREATE INDEX comparisons_pair ON comparisons (pair_id)",
        "CREATE INDEX comparisons_skip ON comparisons (skip_id)",
        # A finished round's decision after its held-out check: accepted (trained on and sampled from), rejected
        # (kept on disk, not built on) or pending (trained, not checked yet: not built on); NULL: rounds before this.
        "ALTER TABLE rounds ADD COLUMN decision TEXT CHECK (decision IN ('accepted', 'rejected', 'pending'))",
        "ALTER TABLE rounds ADD COLUMN reason TEXT",  # why, in words (the rule's, or the person's)
    ),
    # 6. Group rounds (mlx_dpo.data.rating_records): answers rated in groups, a person's or a judge's reward for
    # each, with the answer's tokens, the version that sampled it and the sampler; and which rounds trained them.
    _sql(
        """CREATE TABLE ratings (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            group_key  TEXT NOT NULL,                      -- the answers rated together (one prompt's sample)
            seq        INTEGER NOT NULL,                   -- the answer's place in its group (0-based)
            prompt     TEXT NOT NULL,                      -- JSON messages
            answer     TEXT NOT NULL,
            finished   INTEGER NOT NULL DEFAULT 1 CHECK (finished IN (0, 1)),
            tokens     TEXT,                               -- JSON list of the answer's token ids; NULL: not known
            version    TEXT,                               -- "base" or "v<N>": the version that sampled it
            sampler    TEXT,                               -- how (model, temperature, top-p)
            rater      TEXT NOT NULL,                      -- "human" (a person's rating, 1 to 5) or a judge's name
            reward     REAL NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (group_key, seq)
        )""",
        """CREATE TABLE round_ratings (
            round_id  INTEGER NOT NULL REFERENCES rounds (id) ON DELETE CASCADE,
            rating_id INTEGER NOT NULL,                    -- no foreign key: deleting a rating keeps the history
            PRIMARY KEY (round_id, rating_id)
        )""",
    ),
    # 7. Conversations as trees (mlx_dpo.data.thread_records): each turn's pair points to the pair of the turn it
    # continues, so branches share their history. A pair with no row here starts a thread (or stands alone).
    # Deleting either pair removes the link; the other pair stays, its prompt still holding the whole history.
    _sql(
        """CREATE TABLE turns (
            pair_id   INTEGER PRIMARY KEY REFERENCES pairs (id) ON DELETE CASCADE,
            parent_id INTEGER NOT NULL REFERENCES pairs (id) ON DELETE CASCADE,  -- the turn this one continues
            CHECK (pair_id <> parent_id)
        )""",
        "CREATE INDEX turns_parent ON turns (parent_id)",
    ),
]

SCHEMA_VERSION: int = len(MIGRATIONS)


def prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Set the connection's pragmas and bring the schema up to date (MlxDpoError for a newer or foreign file)."""
    conn.execute("PRAGMA foreign_keys = ON")  # per connection; label_actions relies on its cascades
    # Refuse a newer or foreign database before changing anything in it (journal_mode rewrites the header).
    version = schema_version(conn, path)
    _check_version(version, path)
    conn.execute("PRAGMA journal_mode = WAL")  # persistent; readers never block the writer
    conn.execute("PRAGMA synchronous = FULL")  # fsync the WAL at every commit: a saved label stays saved
    if version < len(MIGRATIONS):
        _migrate(conn, path)


def schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The version recorded in `meta` (0 for a file with none of our tables); MlxDpoError for a foreign file."""
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


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Run the missing migrations and record the new version, all in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn, path)  # again, now holding the write lock: another process
        _check_version(version, path)  # may have migrated meanwhile
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for migrate in MIGRATIONS[version:]:
            migrate(conn)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(len(MIGRATIONS)),))
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def _check_version(version: int, path: Path) -> None:
    if version > len(MIGRATIONS):
        raise MlxDpoError(
            f"{path}: written by a newer mlx-dpo (schema version {version}; this one reads up to "
            f"{len(MIGRATIONS)}); upgrade mlx-dpo to open it"
        )
