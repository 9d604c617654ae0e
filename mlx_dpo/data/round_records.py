"""Training-round records: which adapter version was trained, how, on which stored pairs, and how it ended.

The tables `rounds` (one row per round, its id being the version number: `adapters/v<id>`) and
`round_pairs` (the pairs each round trained on) are written when a round ends (mlx_dpo.training.rounds).
Only a *kept* round counts as having trained its pairs: one that finished and was not turned down by its
held-out check (`decision`, mlx_dpo.training.acceptance). A cancelled, failed, rejected or pending (trained,
not checked yet) round leaves its pairs untrained, and the next round starts from the latest kept version.
A round recorded before decisions existed (decision NULL) is kept, as it was then.

`Rounds` is the store's table of rounds (`store.rounds`, mlx_dpo.data.store).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from mlx_dpo.data.database import Database
from mlx_dpo.data.records import PAIR_COLUMNS, SPLITS, Split, StoredPair, check_choice, pair_from_row
from mlx_dpo.errors import MlxDpoError

RoundStatus = Literal["finished", "cancelled", "failed"]
ROUND_STATUSES: tuple[str, ...] = get_args(RoundStatus)
Decision = Literal["accepted", "rejected", "pending"]
DECISIONS: tuple[str, ...] = get_args(Decision)

# The one rule of which rounds count (as SQL on `rounds r`): finished, and accepted or from before decisions.
KEPT_ROUND = "r.status = 'finished' AND (r.decision IS NULL OR r.decision = 'accepted')"
# The ids of the pairs some kept round trained on (a subquery: `id IN (...)`).
_TRAINED_PAIRS = f"SELECT rp.pair_id FROM round_pairs rp JOIN rounds r ON r.id = rp.round_id WHERE {KEPT_ROUND}"
# ... and those some finished round trained on, kept or not (an online run's round is over once tried).
_TRIED_PAIRS = "SELECT rp.pair_id FROM round_pairs rp JOIN rounds r ON r.id = rp.round_id WHERE r.status = 'finished'"


@dataclass(frozen=True)
class RoundRecord:
    version: int  # the round's number: its adapter is <workspace>/adapters/v<version>
    adapter_path: str
    settings: dict[str, Any]  # the options it trained with (replay, model, init_adapter included)
    metrics: dict[str, Any]  # its last step report, ref_cache/* counts, new/replayed pair counts; or {"error"}
    status: str  # one of ROUND_STATUSES
    created_at: float  # unix time
    pair_ids: list[int]  # stored pairs it trained on, ascending
    decision: str | None = None  # accepted, rejected, pending (trained, not checked); None: from before decisions
    reason: str | None = None  # why it was accepted or rejected, in words

    @property
    def label(self) -> str:
        """ "v3": how the app and the logs name this version."""
        return f"v{self.version}"

    @property
    def kept(self) -> bool:
        """Whether later rounds build on it (the rule KEPT_ROUND says in SQL)."""
        return self.status == "finished" and self.decision in (None, "accepted")


class Rounds:
    """The training rounds of a workspace's store, and which stored pairs they have trained."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def untrained_pairs(self, split: Split = "train") -> list[StoredPair]:
        """Pairs of `split` (oldest first) that no kept round has trained on."""
        return self.pairs_by_training(False, split)

    def trained_pairs(self, split: Split = "train") -> list[StoredPair]:
        """Pairs of `split` (oldest first) that some kept round has trained on."""
        return self.pairs_by_training(True, split)

    def pairs_by_training(self, trained: bool, split: Split = "train") -> list[StoredPair]:
        """Pairs of `split` (oldest first) that some kept round has (`trained`) or has not trained on."""
        check_choice("split", split, SPLITS)
        sql = (
            f"SELECT {PAIR_COLUMNS} FROM pairs WHERE split = ? AND id {'IN' if trained else 'NOT IN'} "
            f"({_TRAINED_PAIRS}) ORDER BY id"
        )
        with self._db.transaction(write=False) as conn:
            return [pair_from_row(r) for r in conn.execute(sql, (split,))]

    def record(
        self,
        version: int,
        adapter_path: str | Path,
        settings: dict,
        metrics: dict,
        status: str,
        pair_ids: Iterable[int],
        decision: str | None = None,
        reason: str | None = None,
    ) -> RoundRecord:
        """Record round `version` (status finished, cancelled or failed) with the pairs it trained on; a finished
        one with its `decision` (accepted, or pending until its held-out check: `decide`)."""
        check_choice("status", status, ROUND_STATUSES)
        if decision is not None:
            check_choice("decision", decision, DECISIONS)
        with self._db.transaction() as conn:
            _insert_round(conn, version, adapter_path, settings, metrics, status, pair_ids, self._db.clock())
            conn.execute("UPDATE rounds SET decision = ?, reason = ? WHERE id = ?", (decision, reason, version))
            return _read_rounds(conn, version)[0]

    def decide(self, version: int, accepted: bool, reason: str) -> RoundRecord:
        """Keep a finished round (accepted: later rounds build on it, its pairs count as trained) or not (rejected).
        A person may accept a round the rule rejected (the app's Train screen)."""
        with self._db.transaction() as conn:
            found = _read_rounds(conn, version)
            if not found:
                raise MlxDpoError(f"no training round v{version}")
            if found[0].status != "finished":
                raise MlxDpoError(f"v{version} did not finish ({found[0].status}); only a finished round is kept")
            conn.execute(
                "UPDATE rounds SET decision = ?, reason = ? WHERE id = ?",
                ("accepted" if accepted else "rejected", reason, version),
            )
            return _read_rounds(conn, version)[0]

    def update_metrics(self, version: int, metrics: dict) -> RoundRecord:
        """Add to a recorded round's metrics: a finished round's held-out numbers, measured once it is recorded
        (so a kill during the measurement loses no trained round)."""
        with self._db.transaction() as conn:
            found = _read_rounds(conn, version)
            if not found:
                raise MlxDpoError(f"no training round v{version}")
            conn.execute(
                "UPDATE rounds SET metrics = ? WHERE id = ?", (json.dumps({**found[0].metrics, **metrics}), version)
            )
            return _read_rounds(conn, version)[0]

    def get(self, version: int) -> RoundRecord:
        with self._db.transaction(write=False) as conn:
            found = _read_rounds(conn, version)
        if not found:
            raise MlxDpoError(f"no training round v{version}")
        return found[0]

    def rows(self) -> list[RoundRecord]:
        """Every recorded round, oldest first."""
        with self._db.transaction(write=False) as conn:
            return _read_rounds(conn)

    def latest_kept(self) -> RoundRecord | None:
        """The version the next round starts from and samples with: the newest kept round (None: the base)."""
        kept = [r for r in self.rows() if r.kept]
        return kept[-1] if kept else None

    def rejected_since_kept(self) -> int:
        """Rounds rejected since the newest kept one: the next attempt's step shrinks with each."""
        latest = self.latest_kept()
        after = latest.version if latest else 0
        return sum(1 for r in self.rows() if r.status == "finished" and r.decision == "rejected" and r.version > after)


def _insert_round(
    conn: sqlite3.Connection,
    version: int,
    adapter_path: str | Path,
    settings: dict,
    metrics: dict,
    status: str,
    pair_ids: Iterable[int],
    now: float,
) -> None:
    conn.execute(
        "INSERT INTO rounds (id, adapter_path, settings, metrics, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (version, str(adapter_path), json.dumps(settings), json.dumps(metrics), status, now),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO round_pairs (round_id, pair_id) VALUES (?, ?)", [(version, int(i)) for i in pair_ids]
    )


def _read_rounds(conn: sqlite3.Connection, version: int | None = None) -> list[RoundRecord]:
    """Every round oldest first, or only round `version` (an empty list if there is none)."""
    one = version is not None
    params = (version,) if one else ()
    rows = conn.execute(
        "SELECT id, adapter_path, settings, metrics, status, created_at, decision, reason FROM rounds "
        + ("WHERE id = ? " if one else "")
        + "ORDER BY id",
        params,
    ).fetchall()
    pair_ids: dict[int, list[int]] = {}
    members = conn.execute(
        "SELECT round_id, pair_id FROM round_pairs"
        + (" WHERE round_id = ?" if one else "")
        + " ORDER BY round_id, pair_id",
        params,
    )
    for round_id, pair_id in members:
        pair_ids.setdefault(round_id, []).append(pair_id)
    return [
        RoundRecord(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5], pair_ids.get(r[0], []), r[6], r[7])
        for r in rows
    ]
