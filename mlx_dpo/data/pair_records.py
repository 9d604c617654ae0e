"""The store's pairs: one table of (prompt, chosen, rejected) labels, their files in and out.

Pairs are checked by the one set of pair rules (mlx_dpo.data.pairs.check_pair), the same as JSONL rows,
so whatever the store accepts it can export, and whatever it exports it can import again. A pair judged by a
program carries its provenance and, written in the same transaction, its place in a prompt file and the
judge's comparisons (mlx_dpo.data.online_records).

`Pairs` is the store's table of them (`store.pairs`, mlx_dpo.data.store).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlx_dpo.data import records, thread_records
from mlx_dpo.data.answers import is_finished, same_flag
from mlx_dpo.data.database import Database
from mlx_dpo.data.online_records import Comparison, PromptRef, check_provenance, record_judging
from mlx_dpo.data.pairs import (
    PreferencePair,
    Problem,
    Style,
    check_pair,
    describe_problems,
    load_pairs,
    write_pairs,
)
from mlx_dpo.data.pairs import (
    pair_id as _content_key,  # the id a file row without one gets: same content, same key
)
from mlx_dpo.data.records import ORIGINS, SPLITS, STYLES, ImportResult, Origin, Split, StoredPair
from mlx_dpo.data.records import dumps as _dumps
from mlx_dpo.errors import MlxDpoError


class Pairs:
    """The pairs of a workspace's store. Every method runs in one transaction, committed when it returns."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
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
        judge: str | None = None,
        version: str | None = None,
        shown_first: str | None = None,
        online: PromptRef | None = None,
        comparisons: list[Comparison] | None = None,
        continues: int | None = None,
    ) -> StoredPair:
        """Save a pair (committed on return). Raises MlxDpoError naming the problem if it is not a valid pair.

        `label` records it for `Labels.undo_last`. `candidate_id` (if still there), `online` (a prompt file's prompt
        marked judged) and the judge's `comparisons` go in the same transaction. Provenance: `judge` (None: a person),
        `version` ("base"/"v<N>" that sampled), `shown_first` (shown as A); an unfinished `Answer` stays unfinished.
        `continues`: the pair of the conversation's turn this one goes on from (mlx_dpo.data.thread_records)."""
        messages, chosen, rejected = _checked_pair(prompt, chosen, rejected)
        records.check_choice("origin", origin, ORIGINS)
        records.check_choice("split", split, SPLITS)
        check_provenance(judge, version, shown_first)
        now = self._db.clock()
        with self._db.transaction() as conn:
            new_id = _insert_pair(
                conn,
                messages,
                chosen,
                rejected,
                origin,
                sampler,
                _clean_note(note),
                split,
                None if external_id is None else str(external_id),
                now,
                (judge, version, shown_first, is_finished(chosen), is_finished(rejected)),
            )
            record_judging(conn, online, comparisons, judge, messages, now, pair_id=new_id)
            if continues is not None:
                thread_records.link(conn, new_id, continues, messages)
            if label:
                conn.execute("INSERT INTO label_actions (pair_id) VALUES (?)", (new_id,))
            if candidate_id is not None:
                conn.execute("DELETE FROM candidates WHERE id = ?", (candidate_id,))
            return records.get_pair(conn, new_id)

    def update(
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
            records.check_choice("split", split, SPLITS)
        with self._db.transaction() as conn:
            return self._update(conn, pair_id, prompt=prompt, chosen=chosen, rejected=rejected, note=note, split=split)

    def swap(self, pair_id: int) -> StoredPair:
        """Exchange chosen and rejected (the label was the wrong way round)."""
        with self._db.transaction() as conn:
            old = records.get_pair(conn, pair_id)
            return self._update(conn, pair_id, chosen=old.rejected, rejected=old.chosen)

    def _update(
        self,
        conn: sqlite3.Connection,
        pair_id: int,
        *,
        prompt: Any = None,
        chosen: str | None = None,
        rejected: str | None = None,
        note: str | None = None,
        split: str | None = None,
    ) -> StoredPair:
        old = records.get_pair(conn, pair_id)
        chosen, rejected = [o if v in (None, o) else v for v, o in ((chosen, old.chosen), (rejected, old.rejected))]
        messages, new_chosen, new_rejected = _checked_pair(old.prompt if prompt is None else prompt, chosen, rejected)
        conn.execute(  # an answer typed anew is finished; one left as it was (or swapped) keeps its flag
            "UPDATE pairs SET prompt = ?, chosen = ?, rejected = ?, content_key = ?, note = ?, split = ?, "
            "updated_at = ?, chosen_finished = ?, rejected_finished = ? WHERE id = ?",
            (
                _dumps(messages),
                new_chosen,
                new_rejected,
                _content_key(messages, new_chosen, new_rejected),
                old.note if note is None else _clean_note(note),
                old.split if split is None else split,
                self._db.clock(),
                is_finished(new_chosen),
                is_finished(new_rejected),
                pair_id,
            ),
        )
        return records.get_pair(conn, pair_id)

    def delete(self, pair_id: int) -> None:
        with self._db.transaction() as conn:
            if conn.execute("DELETE FROM pairs WHERE id = ?", (pair_id,)).rowcount == 0:
                raise MlxDpoError(f"no stored pair with id {pair_id}")

    def get(self, pair_id: int) -> StoredPair:
        with self._db.transaction(write=False) as conn:
            return records.get_pair(conn, pair_id)

    def rows(
        self, *, search: str | None = None, split: Split | None = None, origin: Origin | None = None
    ) -> list[StoredPair]:
        """Pairs newest first, optionally only one split / origin and only those whose prompt, answers or note
        contain `search` (ignoring case)."""
        where, params = [], []
        if split is not None:
            records.check_choice("split", split, SPLITS)
            where.append("split = ?")
            params.append(split)
        if origin is not None:
            records.check_choice("origin", origin, ORIGINS)
            where.append("origin = ?")
            params.append(origin)
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {records.PAIR_COLUMNS} FROM pairs {condition} ORDER BY created_at DESC, id DESC"
        with self._db.transaction(write=False) as conn:
            pairs = [records.pair_from_row(r) for r in conn.execute(sql, params)]
        needle = (search or "").strip().casefold()
        # Searched in Python, not with SQL LIKE: LIKE ignores case for ASCII only, and the prompt column is
        # JSON (keys, escapes) rather than the text the user sees. A store holds thousands of pairs, not millions.
        return [p for p in pairs if needle in _searchable_text(p)] if needle else pairs

    def count(self, split: Split | None = None) -> int:
        if split is not None:
            records.check_choice("split", split, SPLITS)
        with self._db.transaction(write=False) as conn:
            if split is None:
                return conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM pairs WHERE split = ?", (split,)).fetchone()[0]

    def for_training(self, split: Split = "train") -> list[PreferencePair]:
        """The pairs of one split, oldest first, ready for `mlx_dpo.api.train` / `evaluate`."""
        records.check_choice("split", split, SPLITS)
        return self._preference_pairs(split)

    # --- files ---------------------------------------------------------------------------------------------

    def import_file(self, path: str | Path, *, skip_invalid: bool = False, split: Split = "train") -> ImportResult:
        """Add the pairs of a JSONL file (TRL standard or conversational) with origin "imported".

        All or nothing: a bad file (unless `skip_invalid`) or any failure adds no pair at all. Pairs already
        in the store (same prompt, chosen and rejected) are counted as duplicates and not added again.
        """
        records.check_choice("split", split, SPLITS)
        loaded = load_pairs(path, skip_invalid=skip_invalid)  # raises MlxDpoError naming file:line:field
        result = self.add_many(loaded.pairs, split=split)
        result.skipped_invalid, result.errors = loaded.skipped, [str(e) for e in loaded.errors]
        return result

    def add_many(self, pairs: Iterable[PreferencePair], *, split: Split = "train") -> ImportResult:
        """`import_file` for pairs already read (by `load_pairs`, say); their ids become `external_id`. Pairs whose
        prompts continue another stored pair's are linked into its conversation (thread_records.infer_links)."""
        records.check_choice("split", split, SPLITS)
        checked = [(_checked_pair(p.prompt, p.chosen, p.rejected), p.id) for p in pairs]
        added = duplicates = 0
        now = self._db.clock()
        with self._db.transaction() as conn:
            for (prompt, chosen, rejected), external_id in checked:
                key = _content_key(prompt, chosen, rejected)
                if conn.execute("SELECT 1 FROM pairs WHERE content_key = ? LIMIT 1", (key,)).fetchone():
                    duplicates += 1  # also catches a repeat within `pairs`: it was inserted just before
                    continue
                _insert_pair(
                    conn,
                    prompt,
                    chosen,
                    rejected,
                    "imported",
                    None,
                    None,
                    split,
                    external_id,
                    now,
                    (None, None, None, is_finished(chosen), is_finished(rejected)),
                )
                added += 1
            linked = thread_records.infer_links(conn) if added else 0
        return ImportResult(added, duplicates, 0, [], linked)

    def export_file(self, path: str | Path, *, split: Split | None = None, style: Style = "conversational") -> int:
        """Write the pairs (one split, or all) oldest first as JSONL, atomically; returns how many.

        Every row carries its id, so importing the file elsewhere and exporting again gives the same file.
        """
        if split is not None:
            records.check_choice("split", split, SPLITS)
        records.check_choice("style", style, STYLES)
        pairs = self._preference_pairs(split)
        try:
            write_pairs(path, pairs, style)  # checks every pair fits `style` before writing anything
        except OSError as e:
            raise MlxDpoError(f"{path}: cannot write ({e.strerror or e})") from None
        return len(pairs)

    def _preference_pairs(self, split: str | None) -> list[PreferencePair]:
        sql = f"SELECT {records.PAIR_COLUMNS} FROM pairs" + (" WHERE split = ?" if split else "") + " ORDER BY id"
        with self._db.transaction(write=False) as conn:
            stored = [records.pair_from_row(r) for r in conn.execute(sql, (split,) if split else ())]
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


def _checked_pair(prompt: Any, chosen: Any, rejected: Any) -> tuple[list[dict[str, str]], str, str]:
    """The pair as stored (answers keep their finished flag), or MlxDpoError listing every problem (JSONL's rules)."""
    problems: list[Problem] = []
    pair = check_pair(prompt, chosen, rejected, problems, text_answers=True)
    if pair is None:
        raise MlxDpoError(describe_problems(problems))
    return pair[0], same_flag(pair[1], chosen), same_flag(pair[2], rejected)


def _clean_note(note: str | None) -> str | None:
    return note if note and note.strip() else None


def _insert_pair(
    conn: sqlite3.Connection,
    prompt: list[dict[str, str]],
    chosen: str,
    rejected: str,
    origin: str,
    sampler: str | None,
    note: str | None,
    split: str,
    external_id: str | None,
    now: float,
    provenance: tuple = (None, None, None, True, True),
) -> int:
    """Insert one pair row; `provenance` is (judge, version, shown_first, chosen finished, rejected finished)."""
    return conn.execute(
        "INSERT INTO pairs (prompt, chosen, rejected, content_key, origin, sampler, created_at, updated_at, note, "
        "split, external_id, judge, version, shown_first, chosen_finished, rejected_finished) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            _dumps(prompt),
            chosen,
            rejected,
            _content_key(prompt, chosen, rejected),
            origin,
            sampler,
            now,
            now,
            note,
            split,
            external_id,
            *provenance,
        ),
    ).lastrowid


def _searchable_text(p: StoredPair) -> str:
    parts = [m["content"] for m in p.prompt] + [p.chosen, p.rejected, p.note or ""]
    return "\n".join(parts).casefold()
