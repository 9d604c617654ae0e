"""What the preference store hands back: frozen records of its rows, and the values its columns may hold.

Every record is built from a row read with a named column list (never `SELECT *`), so a migration that
adds a column breaks no reader. The lists follow the records' fields, in order.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mlx_dpo.data.answers import Answer, with_flags
from mlx_dpo.data.pairs import PreferencePair, Style
from mlx_dpo.errors import MlxDpoError

Origin = Literal["typed", "sampled", "imported", "compared"]
Split = Literal["train", "valid"]
ORIGINS: tuple[str, ...] = get_args(Origin)
SPLITS: tuple[str, ...] = get_args(Split)
STYLES: tuple[str, ...] = get_args(Style)

PAIR_COLUMNS = (
    "id, prompt, chosen, rejected, origin, sampler, created_at, updated_at, note, split, external_id, "
    "judge, version, shown_first, overruled, chosen_finished, rejected_finished"
)
SKIP_COLUMNS = "id, prompt, reason, created_at, answers, sampler, judge, version, finished"
ShownFirst = Literal["chosen", "rejected"]
SHOWN_FIRST: tuple[str, ...] = get_args(ShownFirst)
CANDIDATE_COLUMNS = "id, prompt, answers, sampler, created_at, finished"


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
    judge: str | None = None  # who chose: None for a person, else the program judge's name ("score:file.py:NAME")
    version: str | None = None  # "base" or "v<N>": the version that sampled the answers (None: not sampled/unknown)
    shown_first: str | None = None  # "chosen" | "rejected": which answer was shown as A (None: not recorded)
    overruled: str | None = None  # the program judge a person overruled (then `judge` is None)
    # `chosen` and `rejected` are Answers (mlx_dpo.data.answers): `.finished` False for one cut at max tokens.

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
    answers: list[str] = field(default_factory=list)  # so an undo can put them back; in the order shown (Answers)
    sampler: str | None = None
    judge: str | None = None  # as StoredPair.judge: None for a person
    version: str | None = None  # as StoredPair.version


@dataclass(frozen=True)
class Candidate:
    """Answers sampled for a prompt but not yet judged."""

    id: int
    prompt: list[dict[str, str]]
    answers: list[str]  # Answers: each knows whether it finished
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
    linked: int = 0  # pairs linked to the conversation turn they continue (mlx_dpo.data.thread_records)


def dumps(value: Any) -> str:
    """JSON as the store writes it into a text column (prompts, answers): UTF-8 kept as it is."""
    return json.dumps(value, ensure_ascii=False)


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """MlxDpoError unless `value` is one of `allowed` (a split, an origin, a style, a round status)."""
    if value not in allowed:
        raise MlxDpoError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")


def get_pair(conn: sqlite3.Connection, pair_id: int) -> StoredPair:
    row = conn.execute(f"SELECT {PAIR_COLUMNS} FROM pairs WHERE id = ?", (pair_id,)).fetchone()
    if row is None:
        raise MlxDpoError(f"no stored pair with id {pair_id}")
    return pair_from_row(row)


def pair_from_row(r: tuple) -> StoredPair:
    id_, prompt, chosen, rejected, *rest, chosen_finished, rejected_finished = r
    return StoredPair(
        id_, json.loads(prompt), Answer(chosen, bool(chosen_finished)), Answer(rejected, bool(rejected_finished)), *rest
    )


def get_skip(conn: sqlite3.Connection, skip_id: int) -> Skip:
    return skip_from_row(conn.execute(f"SELECT {SKIP_COLUMNS} FROM skips WHERE id = ?", (skip_id,)).fetchone())


def skip_from_row(r: tuple) -> Skip:
    id_, prompt, reason, created, answers, *rest, finished = r
    return Skip(id_, json.loads(prompt), reason, created, _answers(answers, finished), *rest)


def candidate_from_row(r: tuple) -> Candidate:
    id_, prompt, answers, sampler, created, finished = r
    return Candidate(id_, json.loads(prompt), _answers(answers, finished), sampler, created)


def _answers(answers: str, finished: str | None) -> list[str]:
    """A JSON list of answers and its JSON list of finished flags (NULL: all finished), as Answers."""
    return with_flags(json.loads(answers), None if finished is None else [bool(f) for f in json.loads(finished)])
