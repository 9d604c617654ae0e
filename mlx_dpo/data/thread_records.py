"""Conversations as trees: each turn's pair points to the pair of the turn it continues (schema migration 7).

A pair's prompt always holds the whole conversation so far (system message, earlier user and assistant turns, the
last user turn), so a pair trains and exports on its own, as TRL's conversational rows. The table `turns` adds
what the prompts alone do not say for certain: which labelled turn a pair continues. Its parent's prompt is the
start of its own, followed by the assistant's answer it went on from (the parent's chosen answer, when labelled in
the app); branches share their history by pointing to the same parent.

Links are written two ways:
- explicitly, by whoever continued a conversation (the Label screen, an online run's `--turns`): `link`, in the
  transaction that adds the pair (`Pairs.add(..., continues=)`);
- by the prefix rule (`infer_links`), for pairs that arrive without one (an imported file): a pair continues the
  stored pair whose prompt is the longest start of its own that is followed by an assistant turn, preferring the
  pair whose chosen answer is that assistant turn (then the oldest). So an exported store, imported elsewhere,
  comes back as the same threads.

`Threads` is the store's table of them (`store.threads`, mlx_dpo.data.store).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from mlx_dpo.data import records
from mlx_dpo.data.database import Database
from mlx_dpo.data.records import StoredPair, dumps
from mlx_dpo.errors import MlxDpoError

Messages = list[dict[str, str]]


def turn_depth(prompt: Messages) -> int:
    """The turn a prompt asks for, from 1: how many user messages it holds."""
    return sum(1 for m in prompt if m.get("role") == "user")


def continues(prompt: Messages, parent_prompt: Messages) -> bool:
    """Whether `prompt` goes on from `parent_prompt`: it starts with it, then an assistant turn, then more."""
    n = len(parent_prompt)
    return len(prompt) > n + 1 and prompt[:n] == parent_prompt and prompt[n].get("role") == "assistant"


def link(conn: sqlite3.Connection, pair_id: int, parent_id: int, prompt: Messages) -> None:
    """Record that pair `pair_id` (whose prompt is `prompt`) continues pair `parent_id`; MlxDpoError if it does not."""
    parent = records.get_pair(conn, parent_id)  # MlxDpoError: no stored pair with that id
    if not continues(prompt, parent.prompt):
        raise MlxDpoError(
            f"pair {pair_id} does not continue pair {parent_id}: its prompt must start with pair "
            f"{parent_id}'s prompt and an assistant turn"
        )
    conn.execute("INSERT OR REPLACE INTO turns (pair_id, parent_id) VALUES (?, ?)", (pair_id, parent_id))


def infer_links(conn: sqlite3.Connection) -> int:
    """Link every pair of a later turn that has no parent yet to the stored pair it continues, by the prefix rule
    (module docstring); returns how many links it added."""
    by_prompt: dict[str, list[tuple[int, str]]] = {}
    unlinked: list[tuple[int, Messages]] = []
    linked = {row[0] for row in conn.execute("SELECT pair_id FROM turns")}
    for id_, prompt_json, chosen in conn.execute("SELECT id, prompt, chosen FROM pairs ORDER BY id"):
        by_prompt.setdefault(prompt_json, []).append((id_, chosen))
        if id_ not in linked and '"assistant"' in prompt_json:
            unlinked.append((id_, json.loads(prompt_json)))
    added = 0
    for id_, prompt in unlinked:
        parent = _parent_by_prefix(prompt, by_prompt)
        if parent is not None:
            conn.execute("INSERT INTO turns (pair_id, parent_id) VALUES (?, ?)", (id_, parent))
            added += 1
    return added


def _parent_by_prefix(prompt: Messages, by_prompt: dict[str, list[tuple[int, str]]]) -> int | None:
    for k in range(len(prompt) - 2, 0, -1):  # the longest start first: the nearest earlier turn
        if prompt[k]["role"] != "assistant" or prompt[k - 1]["role"] != "user":
            continue
        candidates = by_prompt.get(dumps(prompt[:k]))
        if candidates:
            answered = [id_ for id_, chosen in candidates if chosen == prompt[k]["content"]]
            return (answered or [candidates[0][0]])[0]
    return None


@dataclass
class ThreadNode:
    """One labelled turn of a conversation and the turns that continue it (branches: more than one)."""

    pair: StoredPair
    children: list[ThreadNode] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return turn_depth(self.pair.prompt)

    def walk(self) -> list[ThreadNode]:
        """This turn and every turn after it, depth first, oldest branch first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


class Threads:
    """The conversation trees of a workspace's store. Every method runs in one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def parent(self, pair_id: int) -> int | None:
        """The pair whose turn `pair_id` continues (None: it starts a conversation or stands alone)."""
        with self._db.transaction(write=False) as conn:
            row = conn.execute("SELECT parent_id FROM turns WHERE pair_id = ?", (pair_id,)).fetchone()
        return None if row is None else row[0]

    def parent_of(self, prompt: Messages) -> int | None:
        """The stored pair a new pair with this prompt would continue, by the prefix rule (None: none does)."""
        with self._db.transaction(write=False) as conn:
            by_prompt = {}
            for k in range(1, len(prompt) - 1):
                if prompt[k]["role"] != "assistant" or prompt[k - 1]["role"] != "user":
                    continue
                key = dumps(prompt[:k])
                rows = conn.execute("SELECT id, chosen FROM pairs WHERE prompt = ? ORDER BY id", (key,)).fetchall()
                if rows:
                    by_prompt[key] = rows
        return _parent_by_prefix(prompt, by_prompt)

    def links(self) -> dict[int, int]:
        """Every link: pair id -> the pair id it continues."""
        with self._db.transaction(write=False) as conn:
            return dict(conn.execute("SELECT pair_id, parent_id FROM turns").fetchall())

    def path(self, pair_id: int) -> list[StoredPair]:
        """The turns from the first of `pair_id`'s conversation to `pair_id` itself."""
        with self._db.transaction(write=False) as conn:
            out = [records.get_pair(conn, pair_id)]
            while row := conn.execute("SELECT parent_id FROM turns WHERE pair_id = ?", (out[0].id,)).fetchone():
                out.insert(0, records.get_pair(conn, row[0]))
        return out

    def trees(self) -> list[ThreadNode]:
        """The conversations of more than one labelled turn, oldest first, each as the tree of its turns."""
        with self._db.transaction(write=False) as conn:
            links = dict(conn.execute("SELECT pair_id, parent_id FROM turns").fetchall())
            ids = set(links) | set(links.values())
            marks = ",".join("?" * len(ids))
            rows = (
                conn.execute(
                    f"SELECT {records.PAIR_COLUMNS} FROM pairs WHERE id IN ({marks}) ORDER BY id", sorted(ids)
                ).fetchall()
                if ids
                else []
            )
        nodes = {p.id: ThreadNode(p) for p in map(records.pair_from_row, rows)}
        for id_, node in nodes.items():  # ids ascending: children in the order they were added
            if id_ in links:
                nodes[links[id_]].children.append(node)
        return [node for id_, node in nodes.items() if id_ not in links]
