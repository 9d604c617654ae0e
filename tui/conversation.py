"""A conversation on the Label screen, as plain Python: the labelled turns on the way to the prompt being written,
and where the next message goes on from. No Textual, no model.

After a pick, the chosen answer becomes the assistant's turn and the person writes the next user message: the
new prompt is the whole conversation so far, and its pair points to the turn it continues (the store's
`continues=`, mlx_dpo.data.thread_records). `path` is the line of labelled turns last walked, oldest first;
`at` says how many of them the prompt being written goes on from (0: a first turn). Stepping back (`back`)
lowers `at` without forgetting the later turns, so a person can branch from an earlier turn (the next pick
replaces the path after it) or step forward again (`forward`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tui.prompts import PromptParts


@dataclass(frozen=True)
class Turn:
    """A labelled turn: its pair's id, prompt (system message included) and chosen answer."""

    pair_id: int
    prompt: tuple[dict, ...]
    chosen: str

    def history(self) -> list[dict]:
        """The conversation after this turn: its prompt, then the chosen answer as the assistant's turn."""
        return [dict(m) for m in self.prompt] + [{"role": "assistant", "content": str(self.chosen)}]

    def continued_by(self, messages: list[dict]) -> bool:
        """Whether `messages` go on from this turn's history (and then ask something more)."""
        history = self.history()
        return len(messages) > len(history) and messages[: len(history)] == history


class Conversation:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """No conversation: the next prompt starts one."""
        self.path: list[Turn] = []
        self.at = 0

    def __bool__(self) -> bool:
        return bool(self.path)

    @property
    def continuing(self) -> Turn | None:
        """The turn the prompt being written goes on from (None: it starts the conversation)."""
        return self.path[self.at - 1] if self.at else None

    def parent_for(self, messages: list[dict]) -> int | None:
        """The pair a pick on `messages` continues: the nearest turn of the path whose history they go on from."""
        return next((t.pair_id for t in reversed(self.path) if t.continued_by(messages)), None)

    def labeled(self, turn: Turn, parent_id: int | None) -> None:
        """A pick was saved: the path is now the turns up to its parent, then it (a branch replaces what followed)."""
        ids = [t.pair_id for t in self.path]
        keep = ids.index(parent_id) + 1 if parent_id in ids else 0
        self.path = self.path[:keep] + [turn]
        self.at = keep

    def undone(self, pair_id: int) -> bool:
        """The pick of `pair_id` was undone: it leaves the path (with what followed it); True if it was on it.
        The prompt on screen is then that turn's again, going on from the turn before it."""
        ids = [t.pair_id for t in self.path]
        if pair_id not in ids:
            return False
        index = ids.index(pair_id)
        self.path, self.at = self.path[:index], index
        return True

    def go_on(self) -> PromptParts | None:
        """Continue after the last labelled turn of the path: the editor's next prompt (None: nothing to continue)."""
        if not self.path:
            return None
        self.at = len(self.path)
        return self.parts()

    def back(self) -> PromptParts | None:
        """Go on from one turn earlier (branching there); None when already at the start."""
        if self.at == 0:
            return None
        self.at -= 1
        return self.parts()

    def forward(self) -> PromptParts | None:
        """Go on from one turn later along the path; None when at its end."""
        if self.at >= len(self.path):
            return None
        self.at += 1
        return self.parts()

    def parts(self) -> PromptParts:
        """The editor's prompt going on from turn `at`: its system message and history, an empty user message."""
        source = self.continuing.history() if self.at else [dict(m) for m in self.path[0].prompt] if self.path else []
        system = source[0]["content"] if source and source[0]["role"] == "system" else ""
        context = source[1 if system else 0 :] if self.at else []
        return PromptParts(system, "", tuple(context))
