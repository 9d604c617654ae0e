"""Answers rated in groups (schema migration 6): the data of group rounds (GRPO, mlx_dpo.training.grpo).

A group is one prompt's answers sampled together, each with a reward: a person's rating (rater "human", 1 to 5;
"good" is 5 and "bad" 1) or a program judge's (a score judge's score, a prefer judge's round-robin wins:
mlx_dpo.online.groups). Each row keeps the answer's token ids when known (what the model sampled, as it trains),
the version that sampled it ("base" or "v<N>") and the sampler, so a round can be trained again from the same
rows. `round_ratings` says which rounds trained which rows; as for pairs, only a *kept* round counts
(round_records.KEPT_ROUND), so a rejected round's groups wait for the next one.

A person may change a rating later (`rate`, the Data screen); a rating changed after a kept round trained it
does not make it untrained again (the round trained what it was then).

`Ratings` is the store's table of them (`store.ratings`, mlx_dpo.data.store).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mlx_dpo.data.answers import Answer, is_finished
from mlx_dpo.data.database import Database
from mlx_dpo.data.online_records import PromptRef, check_provenance, insert_online_prompt
from mlx_dpo.data.pairs import checked_prompt, parse_completion
from mlx_dpo.data.round_records import KEPT_ROUND
from mlx_dpo.errors import MlxDpoError

HUMAN = "human"
RATING_RANGE = (1, 5)  # a person's ratings (group_settings.RATING_SCALE)
GROUP_SIZES = (2, 6)  # answers a person rates together
_TRAINED = f"SELECT rr.rating_id FROM round_ratings rr JOIN rounds r ON r.id = rr.round_id WHERE {KEPT_ROUND}"
_COLUMNS = (
    "id, group_key, seq, prompt, answer, finished, tokens, version, sampler, rater, reward, created_at, updated_at"
)


@dataclass(frozen=True)
class StoredRating:
    id: int
    group_key: str
    seq: int  # the answer's place in its group
    prompt: list[dict[str, str]]
    answer: str  # an Answer: `.finished` False for one cut at max tokens
    tokens: list[int] | None
    version: str | None
    sampler: str | None
    rater: str  # "human" or a judge's name
    reward: float
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class RatedGroup:
    """One prompt's rated answers, in the order they were sampled."""

    key: str
    ratings: tuple[StoredRating, ...]

    @property
    def prompt(self) -> list[dict[str, str]]:
        return self.ratings[0].prompt

    @property
    def answers(self) -> list[str]:
        return [r.answer for r in self.ratings]

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.ratings]

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.ratings]

    @property
    def varied(self) -> bool:
        """Its rewards are not all equal: a group that teaches something (grpo_loss.varied_groups)."""
        return len(set(self.rewards)) > 1


def check_rating(value: Any) -> float:
    """A person's rating: a whole number from 1 to 5; MlxDpoError otherwise."""
    low, high = RATING_RANGE
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != int(value)
        or not low <= value <= high
    ):
        raise MlxDpoError(f"a rating must be a whole number from {low} to {high} (got {value!r})")
    return float(value)


def _check_group(
    answers: Sequence[str], rewards: Sequence[float], rater: str, tokens: Sequence[list[int] | None] | None
) -> list[float]:
    if not isinstance(rater, str) or not rater.strip():
        raise MlxDpoError(f"a rating needs its rater: 'human' or a judge's name (got {rater!r})")
    if len(answers) != len(rewards) or (tokens is not None and len(tokens) != len(answers)):
        raise MlxDpoError(
            f"{len(answers)} answers but {len(rewards)} rewards"
            + ("" if tokens is None else f" and {len(tokens)} token lists")
        )
    if rater == HUMAN:
        if not GROUP_SIZES[0] <= len(answers) <= GROUP_SIZES[1]:
            raise MlxDpoError(
                f"a person rates {GROUP_SIZES[0]} to {GROUP_SIZES[1]} answers together (got {len(answers)})"
            )
        return [check_rating(r) for r in rewards]
    if len(answers) < 2:
        raise MlxDpoError("a group needs at least two answers")
    for r in rewards:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
            raise MlxDpoError(f"a reward must be a finite number (got {r!r})")
    return [float(r) for r in rewards]


class Ratings:
    """The store's rated groups."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_group(
        self,
        prompt: Any,
        answers: Sequence[str],
        rewards: Sequence[float],
        *,
        rater: str = HUMAN,
        version: str | None = None,
        sampler: str | None = None,
        tokens: Sequence[list[int] | None] | None = None,
        online: PromptRef | None = None,
    ) -> RatedGroup:
        """Store one prompt's answers with their rewards, in one transaction (with its prompt-file place when
        `online` says where it came from). A person's rewards are ratings from 1 to 5."""
        prompt = checked_prompt(prompt)
        values = _check_group(answers, rewards, rater, tokens)
        check_provenance(None, version, None)
        problems: list = []
        texts = [parse_completion(a, f"answer {i + 1}", problems) for i, a in enumerate(answers)]
        if problems:
            raise MlxDpoError(f"{problems[0][0]} {problems[0][1]}")
        key, now = uuid.uuid4().hex[:16], self._db.clock()
        with self._db.transaction() as conn:
            for seq, (text, answer, reward) in enumerate(zip(texts, answers, values)):
                ids = None if tokens is None or tokens[seq] is None else json.dumps([int(t) for t in tokens[seq]])
                conn.execute(
                    f"INSERT INTO ratings ({_COLUMNS.partition(', ')[2]}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        seq,
                        json.dumps(prompt),
                        text,
                        int(is_finished(answer)),
                        ids,
                        version,
                        sampler,
                        rater,
                        reward,
                        now,
                        now,
                    ),
                )
            if online is not None:
                insert_online_prompt(conn, online, prompt, None, None, now)
            return _groups(conn, "WHERE group_key = ?", (key,))[0]

    def rate(self, rating_id: int, rating: int) -> StoredRating:
        """A person changes their rating of one answer (1 to 5); a judge's rewards are not a person's to change."""
        value = check_rating(rating)
        with self._db.transaction() as conn:
            row = conn.execute("SELECT rater FROM ratings WHERE id = ?", (int(rating_id),)).fetchone()
            if row is None:
                raise MlxDpoError(f"no rating {rating_id}")
            if row[0] != HUMAN:
                raise MlxDpoError(f"rating {rating_id} is judge {row[0]}'s reward, not a person's rating")
            conn.execute(
                "UPDATE ratings SET reward = ?, updated_at = ? WHERE id = ?", (value, self._db.clock(), int(rating_id))
            )
            return _read(conn, "WHERE id = ?", (int(rating_id),))[0]

    def groups(self, *, rater: str | None = None) -> list[RatedGroup]:
        """Every rated group, oldest first (only `rater`'s: "human" for a person's)."""
        with self._db.transaction(write=False) as conn:
            return _groups(conn, "" if rater is None else "WHERE rater = ?", () if rater is None else (rater,))

    def untrained(self) -> list[RatedGroup]:
        """The groups (oldest first) no kept round has trained."""
        with self._db.transaction(write=False) as conn:
            return _groups(conn, f"WHERE id NOT IN ({_TRAINED})", ())

    def delete_group(self, key: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM ratings WHERE group_key = ?", (key,))

    def record_round(self, version: int, rating_ids: Iterable[int]) -> None:
        """The rows round `version` trained (the round itself is recorded by `Rounds.record`)."""
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO round_ratings (round_id, rating_id) VALUES (?, ?)",
                [(version, int(i)) for i in rating_ids],
            )

    def round_ids(self, version: int) -> list[int]:
        with self._db.transaction(write=False) as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT rating_id FROM round_ratings WHERE round_id = ? ORDER BY rating_id", (version,)
                )
            ]


def _read(conn, where: str, args: tuple) -> list[StoredRating]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM ratings {where} ORDER BY id", args).fetchall()
    return [
        StoredRating(
            r[0],
            r[1],
            r[2],
            json.loads(r[3]),
            Answer(r[4], bool(r[5])),
            json.loads(r[6]) if r[6] else None,
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
        )
        for r in rows
    ]


def _groups(conn, where: str, args: tuple) -> list[RatedGroup]:
    """The rows matching `where`, gathered by group (each group whole, in its sampled order), oldest group first."""
    keys = list(dict.fromkeys(r.group_key for r in _read(conn, where, args)))
    if not keys:
        return []
    rows = _read(conn, f"WHERE group_key IN ({', '.join('?' * len(keys))})", tuple(keys))
    by_key: dict[str, list[StoredRating]] = {k: [] for k in keys}
    for row in rows:
        by_key[row.group_key].append(row)
    return [RatedGroup(k, tuple(sorted(v, key=lambda r: r.seq))) for k, v in by_key.items()]
