"""Single answers marked good or bad in the store, for KTO (mlx_dpo.data.feedback, mlx_dpo.training.methods).

The table `feedback` holds one row per judged answer: the prompt, the answer, its label and the sampler that
wrote it. `round_feedback` says which rows a round trained on; as for pairs, only a *finished* round counts.
A KTO round (mlx_dpo.training.rounds) trains the untrained feedback together with the untrained pairs
(each pair giving one good and one bad answer).

`FeedbackLabels` is the store's table of them (`store.feedback`, mlx_dpo.data.store).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlx_dpo.data.answers import Answer, is_finished
from mlx_dpo.data.database import Database
from mlx_dpo.data.feedback import Feedback
from mlx_dpo.data.pairs import checked_prompt, parse_completion
from mlx_dpo.data.records import ImportResult
from mlx_dpo.data.round_records import KEPT_ROUND
from mlx_dpo.errors import MlxDpoError

_FINISHED = f"SELECT rf.feedback_id FROM round_feedback rf JOIN rounds r ON r.id = rf.round_id WHERE {KEPT_ROUND}"
_COLUMNS = "id, prompt, completion, label, sampler, created_at, finished"


@dataclass(frozen=True)
class StoredFeedback:
    id: int
    prompt: list[dict[str, str]]
    completion: str  # an Answer: `.finished` False for one cut at max tokens
    desirable: bool
    sampler: Any
    created_at: float

    def to_feedback(self) -> Feedback:
        return Feedback(f"feedback-{self.id}", self.prompt, self.completion, self.desirable)


class FeedbackLabels:
    """The store's single-answer labels."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, prompt: Any, completion: str, desirable: bool, sampler: Any = None) -> StoredFeedback:
        """Store one answer marked good (`desirable`) or bad; the prompt and answer follow the pair rules."""
        prompt = checked_prompt(prompt)
        problems: list = []
        text = parse_completion(completion, "answer", problems)
        if text is None:
            raise MlxDpoError(f"answer {problems[0][1]}")
        if not isinstance(desirable, bool):
            raise MlxDpoError(f"a label must be good or bad (True or False), not {desirable!r}")
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO feedback (prompt, completion, label, sampler, created_at, finished) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    json.dumps(prompt),
                    text,
                    int(desirable),
                    json.dumps(sampler) if sampler else None,
                    self._db.clock(),
                    int(is_finished(completion)),
                ),
            )
            return _read(conn, f"WHERE id = {int(cur.lastrowid)}")[0]

    def add_many(self, examples: Iterable[Feedback], source: str | None = None) -> ImportResult:
        """Add answers marked good or bad read from a file (TRL's unpaired rows: feedback.load_feedback), all in one
        transaction. An answer stored before with the same prompt and label counts as a duplicate, not added again."""
        rows = [(json.dumps(checked_prompt(f.prompt)), f.completion, int(f.desirable)) for f in examples]
        sampler = json.dumps({"imported": source}) if source else None
        added = duplicates = 0
        with self._db.transaction() as conn:
            for row in rows:
                if conn.execute(
                    "SELECT 1 FROM feedback WHERE prompt = ? AND completion = ? AND label = ? LIMIT 1", row
                ).fetchone():
                    duplicates += 1  # also a repeat within `examples`: it was inserted just before
                    continue
                conn.execute(
                    "INSERT INTO feedback (prompt, completion, label, sampler, created_at) VALUES (?, ?, ?, ?, ?)",
                    (*row, sampler, self._db.clock()),
                )
                added += 1
        return ImportResult(added, duplicates, 0, [])

    def rows(self) -> list[StoredFeedback]:
        with self._db.transaction(write=False) as conn:
            return _read(conn, "")

    def untrained(self) -> list[StoredFeedback]:
        """Labels (oldest first) that no kept round has trained on."""
        with self._db.transaction(write=False) as conn:
            return _read(conn, f"WHERE id NOT IN ({_FINISHED})")

    def record_round(self, version: int, feedback_ids: Iterable[int]) -> None:
        """The labels round `version` trained on (the round itself is recorded by `Rounds.record`)."""
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO round_feedback (round_id, feedback_id) VALUES (?, ?)",
                [(version, int(i)) for i in feedback_ids],
            )

    def round_ids(self, version: int) -> list[int]:
        """The labels round `version` trained on, by id."""
        with self._db.transaction(write=False) as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT feedback_id FROM round_feedback WHERE round_id = ? ORDER BY feedback_id", (version,)
                )
            ]


def _read(conn, where: str) -> list[StoredFeedback]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM feedback {where} ORDER BY id").fetchall()
    return [
        StoredFeedback(
            r[0], json.loads(r[1]), Answer(r[2], bool(r[6])), bool(r[3]), json.loads(r[4]) if r[4] else None, r[5]
        )
        for r in rows
    ]
