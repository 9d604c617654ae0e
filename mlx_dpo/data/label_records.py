"""The store's record of labeling besides the pairs: ties and skips, answers waiting to be judged, and the
history `undo_last` walks back.

  skips          prompts judged a tie or skipped (with their answers, no pair)
  candidates     sampled answers waiting to be judged (answers keep whether they finished: mlx_dpo.data.answers)
  label_actions  the labeling history, newest first: a pair or a skip per action (a program judge's are not in it)

`Labels` is the store's table of them (`store.labels`, mlx_dpo.data.store).
"""

from __future__ import annotations

from typing import Any

from mlx_dpo.data import records
from mlx_dpo.data.answers import flags_json
from mlx_dpo.data.database import Database
from mlx_dpo.data.online_records import Comparison, PromptRef, check_provenance, record_judging
from mlx_dpo.data.pairs import checked_prompt
from mlx_dpo.data.records import Candidate, Skip, UndoResult
from mlx_dpo.data.records import dumps as _dumps
from mlx_dpo.errors import MlxDpoError


class Labels:
    """Ties and skips, candidates and the undo history of a workspace's store; one transaction per method."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_skip(
        self,
        prompt: str | list[dict[str, str]],
        reason: str = "tie",
        *,
        answers: list[str] | None = None,
        sampler: str | None = None,
        candidate_id: int | None = None,
        judge: str | None = None,
        version: str | None = None,
        online: PromptRef | None = None,
        label: bool = True,
        comparisons: list[Comparison] | None = None,
    ) -> Skip:
        """Record a prompt judged a tie (or skipped) as a labeling action; committed on return. `answers` (the ones
        judged, in the order shown) are kept for undo; the other keywords are `Pairs.add`'s."""
        messages, finished = checked_prompt(prompt), flags_json(answers or [])
        answers = _checked_answers(answers or [], allow_empty=True)
        if not isinstance(reason, str) or not reason.strip():
            raise MlxDpoError("a skip needs a reason (e.g. 'tie')")
        check_provenance(judge, version, None)
        now = self._db.clock()
        with self._db.transaction() as conn:
            skip_id = conn.execute(
                "INSERT INTO skips (prompt, answers, sampler, reason, created_at, judge, version, finished) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_dumps(messages), _dumps(answers), sampler, reason, now, judge, version, finished),
            ).lastrowid
            record_judging(conn, online, comparisons, judge, messages, now, skip_id=skip_id)
            if label:  # a person's tie, which `undo_last_label` may take back (a program judge's is not)
                conn.execute("INSERT INTO label_actions (skip_id) VALUES (?)", (skip_id,))
            if candidate_id is not None:
                conn.execute("DELETE FROM candidates WHERE id = ?", (candidate_id,))
            return records.get_skip(conn, skip_id)

    def skips(self) -> list[Skip]:
        """Skips newest first."""
        with self._db.transaction(write=False) as conn:
            rows = conn.execute(f"SELECT {records.SKIP_COLUMNS} FROM skips ORDER BY created_at DESC, id DESC")
            return [records.skip_from_row(r) for r in rows]

    def undo_last(self) -> UndoResult | None:
        """Delete the pair or skip saved by the latest labeling action still in the store and return it (so
        the UI can show its prompt and answers again); None when there is nothing to undo.

        The history is kept in the database: it survives restarts, and pairs deleted meanwhile leave it.
        """
        with self._db.transaction() as conn:
            row = conn.execute("SELECT pair_id, skip_id FROM label_actions ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                return None
            pair_id, skip_id = row
            if pair_id is not None:
                pair = records.get_pair(conn, pair_id)
                conn.execute("DELETE FROM pairs WHERE id = ?", (pair_id,))  # its label_actions row cascades
                return UndoResult("pair", pair, None)
            skip = records.get_skip(conn, skip_id)
            conn.execute("DELETE FROM skips WHERE id = ?", (skip_id,))
            return UndoResult("skip", None, skip)

    def add_candidate(
        self, prompt: str | list[dict[str, str]], answers: list[str], sampler: str | None = None
    ) -> Candidate:
        """Keep sampled answers until they are judged (so a restart does not lose them)."""
        messages, finished = checked_prompt(prompt), flags_json(answers or [])
        answers = _checked_answers(answers, allow_empty=False)
        with self._db.transaction() as conn:
            cid = conn.execute(
                "INSERT INTO candidates (prompt, answers, sampler, created_at, finished) VALUES (?, ?, ?, ?, ?)",
                (_dumps(messages), _dumps(answers), sampler, self._db.clock(), finished),
            ).lastrowid
            row = conn.execute(f"SELECT {records.CANDIDATE_COLUMNS} FROM candidates WHERE id = ?", (cid,)).fetchone()
            return records.candidate_from_row(row)

    def candidates(self) -> list[Candidate]:
        """Candidates oldest first: the order they are to be judged in."""
        with self._db.transaction(write=False) as conn:
            rows = conn.execute(f"SELECT {records.CANDIDATE_COLUMNS} FROM candidates ORDER BY id")
            return [records.candidate_from_row(r) for r in rows]

    def delete_candidate(self, candidate_id: int) -> None:
        with self._db.transaction() as conn:
            if conn.execute("DELETE FROM candidates WHERE id = ?", (candidate_id,)).rowcount == 0:
                raise MlxDpoError(f"no candidate with id {candidate_id}")


def _checked_answers(answers: Any, *, allow_empty: bool) -> list[str]:
    if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
        raise MlxDpoError("answers must be a list of strings")
    if not answers and not allow_empty:
        raise MlxDpoError("a candidate needs at least one answer")
    return list(answers)
