"""The Data screen's "conversations" view: every conversation of more than one labelled turn as a thread, its turns
depth first (a branch right after the turn it branches from), each prompt cell indented by its turn and showing
that turn's user message. The tree is the store's (mlx_dpo.data.thread_records); this only orders and draws it.
"""

from __future__ import annotations

from mlx_dpo.api import StoredPair
from tui.prompts import prompt_snippet


def threaded(trees: list, shown: list[StoredPair], width: int = 60) -> tuple[list[StoredPair], dict[int, str]]:
    """The pairs of `shown` (a search's result) that belong to a conversation, thread by thread, depth first, and
    the prompt cell of each: "└2 " and more indentation per turn after the first."""
    keep = {p.id for p in shown}
    rows: list[StoredPair] = []
    cells: dict[int, str] = {}
    for root in trees:
        for node in root.walk():
            if node.pair.id not in keep:
                continue
            depth = node.depth - root.depth  # turns after the first of this thread
            lead = f"{' ' * (depth - 1)}└{node.depth} " if depth else f"{node.depth} "
            rows.append(node.pair)
            cells[node.pair.id] = lead + prompt_snippet(node.pair.prompt, width - len(lead))
    return rows, cells


def summary(trees: list, rows: list[StoredPair]) -> str:
    turns = sum(len(root.walk()) for root in trees)
    return f"{len(trees)} conversation{'s' * (len(trees) != 1)}, {turns} labelled turns" + (
        f" ({len(rows)} shown)" if len(rows) != turns else ""
    )
