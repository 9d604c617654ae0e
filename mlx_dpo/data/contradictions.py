"""Labels that contradict each other, found without a model: pure functions of the stored pairs.

Under one prompt every pair is an arrow "chosen is better than rejected" between two answers. Labels
contradict each other where the arrows go round in a circle:
  reversed  the same prompt and the same two answers, judged both ways (a > b in one pair, b > a in another);
  cycle     a circle through three or more answers (a > b, b > c, c > a): each answer on it is both
            chosen and rejected against the same other answer, once directly and once through the others.
Each circle is one strongly connected part of that prompt's graph of arrows, reported once with every pair
on it. Prompts and answers are compared as the pair rules compare them (surrounding whitespace ignored).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


class LabeledPair(Protocol):
    """What a pair needs for this check: StoredPair (and PreferencePair with an int id) fit."""

    id: int
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class Contradiction:
    kind: Literal["reversed", "cycle"]
    pair_ids: tuple[int, ...]  # every pair on the circle, ascending
    answers: tuple[str, ...]  # the answers on it, in first-seen order
    prompt: list[dict[str, str]]


def _prompt_key(prompt: Sequence[dict[str, str]]) -> str:
    return json.dumps([[m.get("role"), str(m.get("content", "")).strip()] for m in prompt])


def find_contradictions(pairs: Iterable[LabeledPair]) -> list[Contradiction]:
    """Every set of labels that contradict each other (see the module docstring), ordered by their first pair."""
    by_prompt: dict[str, list[LabeledPair]] = {}
    for p in pairs:
        by_prompt.setdefault(_prompt_key(p.prompt), []).append(p)
    found = [c for group in by_prompt.values() if len(group) > 1 for c in _circles(group)]
    return sorted(found, key=lambda c: c.pair_ids)


def _circles(group: list[LabeledPair]) -> list[Contradiction]:
    """The contradictions among the pairs of one prompt."""
    answers: dict[str, int] = {}  # stripped answer -> node number, in first-seen order
    edges: dict[int, set[int]] = {}
    for p in group:
        a, b = (answers.setdefault(x.strip(), len(answers)) for x in (p.chosen, p.rejected))
        edges.setdefault(a, set()).add(b)
    texts = list(answers)
    out = []
    for part in _strongly_connected(len(texts), edges):
        if len(part) < 2:
            continue
        ids = tuple(
            sorted(p.id for p in group if answers[p.chosen.strip()] in part and answers[p.rejected.strip()] in part)
        )
        out.append(
            Contradiction(
                "reversed" if len(part) == 2 else "cycle", ids, tuple(texts[i] for i in sorted(part)), group[0].prompt
            )
        )
    return out


def _strongly_connected(n: int, edges: dict[int, set[int]]) -> list[set[int]]:
    """Tarjan's strongly connected components of a graph on nodes 0..n-1, iteratively (no recursion limit)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    parts: list[set[int]] = []
    for root in range(n):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    part = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        part.add(top)
                        if top == node:
                            break
                    parts.append(part)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return parts
