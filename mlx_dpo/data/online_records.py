"""Who judged each pair, what sampled it, and how far an online run has come through its prompt file.

Pairs and skips carry their provenance (schema migration 4): `judge` (None for a person, else the program
judge's name), `version` ("base" or "v<N>": the adapter version that sampled the answers) and, for pairs,
`shown_first` (which answer was shown as A: position bias can be measured) and `overruled` (the judge a
person overruled). `overrule` is the one way a person corrects a program judge: swap, and the pair becomes
the person's, the old judge kept.

The table `online_prompts` (one row per prompt of a prompt file an online run has judged) is written in the
same transaction as the prompt's pair or skip (PreferenceStore.add_pair/add_skip with `online=`), so a kill
at any moment leaves either both or neither: a restarted run (mlx_dpo.online.loop) knows exactly which
prompts it has used and which round they belong to.

The table `comparisons` (schema migration 5) keeps every comparison a judge made to choose a prompt's pair (a
knockout over N answers makes N - 1: mlx_dpo.online.pairing), written with the pair or skip it led to
(`record_judging`), so a person can see afterwards what the judge was asked and what it said.

`Judging` is the store's table of them (`store.judging`, mlx_dpo.data.store).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass

from mlx_dpo.data import records
from mlx_dpo.data.answers import Answer, is_finished
from mlx_dpo.data.database import Database
from mlx_dpo.data.pairs import pair_id as content_key
from mlx_dpo.data.records import SHOWN_FIRST, StoredPair
from mlx_dpo.data.round_records import _TRAINED_PAIRS, _TRIED_PAIRS
from mlx_dpo.errors import MlxDpoError

HUMAN_JUDGE = "human"  # what `overruled`-aware views show for judge None
_VERSION = re.compile(r"^(base|v[1-9][0-9]*)$")


@dataclass(frozen=True)
class PromptRef:
    """Where a judged prompt came from: `position` in the prompt file `source`, judged in online `round`."""

    source: str
    position: int
    round: int


@dataclass(frozen=True)
class OnlinePrompt:
    """A prompt of a prompt file an online run has judged, and what it gave (a pair, a skip, or neither any
    more: deleted since)."""

    position: int
    prompt_key: str
    round: int
    pair_id: int | None
    skip_id: int | None
    trained: bool  # its pair is in some kept round
    tie: bool = False  # its skip is a tie (reason "tie")
    tried: bool = False  # its pair is in some finished round, kept or not (a rejected round tried it)


@dataclass(frozen=True)
class Comparison:
    """One comparison a judge made: `first` and `second` as shown to it, its verdict `choice` (1, 2, 0 for a
    tie, None for a skip), and whether it `counted` (False: it preferred an unfinished answer over a finished
    one, which no program judge's pair may do: mlx_dpo.online.verdict.may_prefer)."""

    seq: int  # its place among the prompt's comparisons (0-based)
    first: str  # Answers: each keeps whether it finished
    second: str
    choice: int | None
    counted: bool = True
    note: str = ""


def prompt_key(messages: list[dict[str, str]]) -> str:
    """The hash a prompt file's line is recognised by on restart (so an edited file is noticed)."""
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def check_provenance(judge: str | None, version: str | None, shown_first: str | None) -> None:
    """MlxDpoError unless judge is None or a name, version None/"base"/"v<N>", shown_first None/chosen/rejected."""
    if judge is not None and (not isinstance(judge, str) or not judge.strip()):
        raise MlxDpoError(f"judge must be a judge's name, or None for a person (got {judge!r})")
    if version is not None and (not isinstance(version, str) or not _VERSION.match(version)):
        raise MlxDpoError(f"version must be 'base' or 'v<N>' (got {version!r})")
    if shown_first is not None:
        records.check_choice("shown_first", shown_first, SHOWN_FIRST)


def insert_online_prompt(
    conn: sqlite3.Connection,
    ref: PromptRef,
    messages: list[dict[str, str]],
    pair_id: int | None,
    skip_id: int | None,
    now: float,
) -> None:
    """Record `ref` as judged (inside the caller's transaction, with its pair or skip)."""
    if not isinstance(ref.position, int) or ref.position < 0 or not isinstance(ref.round, int) or ref.round < 1:
        raise MlxDpoError(f"bad prompt reference {ref!r}: position >= 0 and round >= 1 expected")
    try:
        conn.execute(
            "INSERT INTO online_prompts (source, position, prompt_key, round, pair_id, skip_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ref.source, ref.position, prompt_key(messages), ref.round, pair_id, skip_id, now),
        )
    except sqlite3.IntegrityError:
        raise MlxDpoError(f"{ref.source}: prompt {ref.position + 1} was already judged in this workspace") from None


def record_judging(
    conn: sqlite3.Connection,
    online: PromptRef | None,
    comparisons: list[Comparison] | None,
    judge: str | None,
    messages: list[dict[str, str]],
    now: float,
    *,
    pair_id: int | None = None,
    skip_id: int | None = None,
) -> None:
    """With a new pair or skip, inside the caller's transaction: its prompt-file place and the judge's comparisons."""
    if online is not None:
        insert_online_prompt(conn, online, messages, pair_id, skip_id, now)
    if comparisons and judge is None:
        raise MlxDpoError("comparisons need the judge that made them")
    conn.executemany(
        "INSERT INTO comparisons (pair_id, skip_id, seq, first, second, first_finished, second_finished, choice, "
        "counted, note, judge, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                pair_id,
                skip_id,
                c.seq,
                c.first,
                c.second,
                is_finished(c.first),
                is_finished(c.second),
                c.choice,
                int(c.counted),
                c.note or None,
                judge,
                now,
            )
            for c in comparisons or []
        ],
    )


class Judging:
    """Overruling a program judge, the comparisons judges made, and the online runs' progress through their
    prompt files."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def overrule(self, pair_id: int) -> StoredPair:
        """A person disagrees with the program judge of pair `pair_id`: swap chosen and rejected, the pair
        becomes the person's (judge None) and the old judge is kept in `overruled`. MlxDpoError if a person
        judged it already (swap_pair is for that)."""
        with self._db.transaction() as conn:
            old = records.get_pair(conn, pair_id)
            if old.judge is None:
                raise MlxDpoError(f"pair {pair_id} was judged by a person; there is no program judge to overrule")
            flipped = {"chosen": "rejected", "rejected": "chosen"}.get(old.shown_first or "")
            conn.execute(
                "UPDATE pairs SET chosen = rejected, rejected = chosen, judge = NULL, overruled = ?, shown_first = ?, "
                "content_key = ?, updated_at = ?, chosen_finished = rejected_finished, "
                "rejected_finished = chosen_finished WHERE id = ?",
                (old.judge, flipped, _swapped_key(old), self._db.clock(), pair_id),
            )
            return records.get_pair(conn, pair_id)

    def comparisons(self, *, pair_id: int | None = None, skip_id: int | None = None) -> list[Comparison]:
        """The comparisons that led to a pair (or a skip), in the order the judge made them."""
        column, value = ("pair_id", pair_id) if pair_id is not None else ("skip_id", skip_id)
        with self._db.transaction(write=False) as conn:
            rows = conn.execute(
                f"SELECT seq, first, second, first_finished, second_finished, choice, counted, note "
                f"FROM comparisons WHERE {column} = ? ORDER BY seq",
                (value,),
            ).fetchall()
        return [
            Comparison(seq, Answer(a, bool(af)), Answer(b, bool(bf)), choice, bool(counted), note or "")
            for seq, a, b, af, bf, choice, counted, note in rows
        ]

    def online_prompts(self, source: str) -> list[OnlinePrompt]:
        """The prompts of file `source` an online run has judged, by position."""
        sql = (
            "SELECT o.position, o.prompt_key, o.round, o.pair_id, o.skip_id, "
            f"o.pair_id IS NOT NULL AND o.pair_id IN ({_TRAINED_PAIRS}), s.reason IS 'tie', "
            f"o.pair_id IS NOT NULL AND o.pair_id IN ({_TRIED_PAIRS}) "
            "FROM online_prompts o LEFT JOIN skips s ON s.id = o.skip_id WHERE o.source = ? ORDER BY o.position"
        )
        with self._db.transaction(write=False) as conn:
            return [
                OnlinePrompt(p, k, r, pid, sid, bool(t), bool(tie), bool(tried))
                for p, k, r, pid, sid, t, tie, tried in conn.execute(sql, (source,))
            ]


def _swapped_key(pair: StoredPair) -> str:
    return content_key(pair.prompt, pair.rejected, pair.chosen)
