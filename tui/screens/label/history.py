"""The labels of this session, so `u` (undo) can put the Label screen back exactly as it was.

The store keeps the undo order itself (`PreferenceStore.undo_last_label`, which survives restarts); this
remembers what the store does not: the prompt exactly as it was in the editors and the queue position.
A label from an earlier session is rebuilt from the store's copy instead, its answers in the order they
were shown (the pair's `shown_first`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlx_dpo.api import UndoResult
from tui.prompts import PromptParts


@dataclass(frozen=True)
class LabelRecord:
    """What a label saved."""

    kind: str  # "pair" or "skip"
    id: int
    parts: PromptParts
    answers: tuple[str, str]
    queue_pos: int | None


@dataclass(frozen=True)
class Undone:
    """What an undone label brings back on screen."""

    what: str  # "pair #3" or "tie"
    parts: PromptParts
    answers: tuple[str, str]
    sampler: str | None  # labeling it again keeps who sampled it
    queue_pos: int | None  # where the queue was when it was labeled (this session only)


def two(answers: list[str]) -> tuple[str, str]:
    """The first two of some stored answers, padded with empty ones (a tie may have kept fewer)."""
    first, second = (list(answers) + ["", ""])[:2]
    return first, second


class LabelHistory:
    def __init__(self) -> None:
        self.records: list[LabelRecord] = []

    def add(self, record: LabelRecord) -> None:
        self.records.append(record)

    def undone(self, result: UndoResult) -> Undone:
        """What to show again for the label the store just removed (and forget its record)."""
        item = result.pair if result.kind == "pair" else result.skip
        record = next((r for r in reversed(self.records) if r.kind == result.kind and r.id == item.id), None)
        if record is not None:
            self.records.remove(record)
            parts, answers, queue_pos = record.parts, record.answers, record.queue_pos
        else:  # labeled in an earlier session: rebuild the screen from the store's copy
            parts, queue_pos = PromptParts.from_messages(item.prompt), None
            answers = (
                two(item.answers)
                if result.kind == "skip"
                else ((item.rejected, item.chosen) if item.shown_first == "rejected" else (item.chosen, item.rejected))
            )
        what = f"pair #{item.id}" if result.kind == "pair" else "tie"
        return Undone(what, parts, answers, item.sampler, queue_pos)
