"""The preference store: every label (pair, tie/skip, sampled candidate, good/bad answer) of a workspace, and the
training rounds, in one SQLite file.

    with PreferenceStore("my-workspace") as store:
        store.pairs.add(prompt, chosen, rejected)       # or store.add_pair(...), the name it always had
        print(store.rounds.latest_kept())

`<workspace>/preferences.sqlite` holds these tables, each read and written by one small class the store holds:
  meta                        key/value; `schema_version` says which migrations have run (mlx_dpo.data.schema)
  pairs                       store.pairs     (Pairs, pair_records.py): prompt, chosen, rejected, origin, split, ...
  skips, candidates, label_actions
                              store.labels    (Labels, label_records.py): ties/skips, answers waiting, undo history
  feedback, round_feedback    store.feedback  (FeedbackLabels, feedback_records.py): single answers marked good/bad
  rounds, round_pairs         store.rounds    (Rounds, round_records.py): training rounds and the pairs they trained
  online_prompts, comparisons store.judging   (Judging, online_records.py): overrules, comparisons, prompt files
  ratings, round_ratings      store.ratings   (Ratings, rating_records.py): answers rated in groups (GRPO)
  turns                       store.threads   (Threads, thread_records.py): which turn each conversation turn continues

The store itself holds the open database (mlx_dpo.data.database: one connection, its lock, one transaction per
method, committed before the method returns, so a label the app has reported "saved" survives a crash or kill,
and the store may be used from several threads and processes). The methods callers have always called on the
store (`store.add_pair`, `store.record_round`, ...) are the tables' own (`_Table` below); mlx_dpo.data.records
holds the frozen records handed back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlx_dpo.data import schema
from mlx_dpo.data.database import Database
from mlx_dpo.data.feedback_records import FeedbackLabels
from mlx_dpo.data.label_records import Labels
from mlx_dpo.data.online_records import Judging
from mlx_dpo.data.pair_records import Pairs
from mlx_dpo.data.rating_records import Ratings
from mlx_dpo.data.records import (  # noqa: F401  (re-exported: what the store hands back)
    ORIGINS,
    SPLITS,
    Candidate,
    ImportResult,
    Skip,
    StoredPair,
    UndoResult,
)
from mlx_dpo.data.round_records import RoundRecord, Rounds
from mlx_dpo.data.thread_records import Threads

__all__ = ["Candidate", "ImportResult", "PreferenceStore", "RoundRecord", "Skip", "StoredPair", "UndoResult"]


class _Table:
    """A store method under the name callers have always used, done by one of its tables:
    `store.add_pair` is `store.pairs.add` (the same bound method, with its signature and docstring)."""

    def __init__(self, table: str, method: str) -> None:
        self.table, self.method = table, method

    def __get__(self, store: Any, owner: type | None = None) -> Any:
        return self if store is None else getattr(getattr(store, self.table), self.method)


class PreferenceStore:
    """All preference data of one workspace folder. Every method that writes has committed when it returns.

    `PreferenceStore(workspace, create=True, clock=time.time, busy_timeout=None)` opens (or creates) the
    database (see mlx_dpo.data.database.Database for the arguments).
    """

    def __init__(
        self,
        workspace: str | Path,
        *,
        create: bool = True,
        clock: Callable[[], float] = time.time,
        busy_timeout: float | None = None,
    ) -> None:
        self.db = Database(workspace, create=create, clock=clock, busy_timeout=busy_timeout)
        self.pairs = Pairs(self.db)
        self.labels = Labels(self.db)
        self.feedback = FeedbackLabels(self.db)
        self.rounds = Rounds(self.db)
        self.judging = Judging(self.db)
        self.ratings = Ratings(self.db)
        self.threads = Threads(self.db)

    @classmethod
    def default_workspace(cls) -> Path:
        return Path("mlx-dpo-workspace")

    @property
    def workspace(self) -> Path:
        return self.db.workspace

    @property
    def path(self) -> Path:
        return self.db.path

    @property
    def busy_timeout(self) -> float:
        return self.db.busy_timeout

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """SQLite's own check of the whole file: "ok", or the problems it found (one per line)."""
        return self.db.integrity_check()

    # --- overview and health -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts by split and origin, skips, candidates, plus schema version, journal mode and path."""
        with self.db.transaction(write=False) as conn:
            by_split = dict(conn.execute("SELECT split, COUNT(*) FROM pairs GROUP BY split").fetchall())
            by_origin = dict(conn.execute("SELECT origin, COUNT(*) FROM pairs GROUP BY origin").fetchall())
            skips = conn.execute("SELECT COUNT(*) FROM skips").fetchone()[0]
            candidates = conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
            version = schema.schema_version(conn, self.db.path)
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return {
            "path": str(self.db.path),
            "schema_version": version,
            "journal_mode": journal,
            "pairs": sum(by_split.values()),
            "by_split": {s: by_split.get(s, 0) for s in SPLITS},
            "by_origin": {o: by_origin.get(o, 0) for o in ORIGINS},
            "skips": skips,
            "candidates": candidates,
        }

    # --- the tables' methods under their old names ---------------------------------------------------------

    add_pair = _Table("pairs", "add")
    update_pair = _Table("pairs", "update")
    swap_pair = _Table("pairs", "swap")
    delete_pair = _Table("pairs", "delete")
    get_pair = _Table("pairs", "get")
    list_pairs = _Table("pairs", "rows")
    count_pairs = _Table("pairs", "count")
    training_pairs = _Table("pairs", "for_training")
    import_jsonl = _Table("pairs", "import_file")
    import_pairs = _Table("pairs", "add_many")
    export_jsonl = _Table("pairs", "export_file")

    add_skip = _Table("labels", "add_skip")
    list_skips = _Table("labels", "skips")
    undo_last_label = _Table("labels", "undo_last")
    add_candidate = _Table("labels", "add_candidate")
    list_candidates = _Table("labels", "candidates")
    delete_candidate = _Table("labels", "delete_candidate")

    add_feedback = _Table("feedback", "add")
    import_feedback = _Table("feedback", "add_many")
    list_feedback = _Table("feedback", "rows")
    untrained_feedback = _Table("feedback", "untrained")
    record_round_feedback = _Table("feedback", "record_round")
    round_feedback_ids = _Table("feedback", "round_ids")

    untrained_pairs = _Table("rounds", "untrained_pairs")
    trained_pairs = _Table("rounds", "trained_pairs")
    pairs_by_training = _Table("rounds", "pairs_by_training")
    record_round = _Table("rounds", "record")
    decide_round = _Table("rounds", "decide")
    update_round_metrics = _Table("rounds", "update_metrics")
    get_round = _Table("rounds", "get")
    list_rounds = _Table("rounds", "rows")
    latest_kept_round = _Table("rounds", "latest_kept")
    latest_finished_round = _Table("rounds", "latest_kept")  # its name before rounds could be rejected
    rejected_since_kept = _Table("rounds", "rejected_since_kept")

    overrule = _Table("judging", "overrule")
    comparisons = _Table("judging", "comparisons")
    online_prompts = _Table("judging", "online_prompts")
