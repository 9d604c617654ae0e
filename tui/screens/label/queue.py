"""The Label screen's prompt queue: `n` next, `o` open a file, and moving on by itself after a label.

A mixin of `LabelScreen` (it uses the screen's editor, sampling and status helpers); the queue's rules
(positions, status text, reading the file) are `tui.prompts.PromptQueue`'s.
"""

from __future__ import annotations

from textual.widgets import TextArea

from tui.modals import PathChoice, PathModal
from tui.prompts import PromptParts, PromptQueue, QueueError


class QueueActions:
    def action_next(self) -> None:
        index = self.queue.next_index
        if index is not None:
            self._load_queued(index)
            return
        if self.queue:
            self.app.notify("The queue is done: every prompt has been shown.", timeout=4)
            self.queue = PromptQueue()
            self._show_queue()
        self._clear_answers()
        self._set_editor(PromptParts())
        self.show_status("")
        self.query_one("#prompt", TextArea).focus()

    def _advance_queue(self) -> None:
        """After a label, a queue moves on by itself (the saved status stays visible)."""
        if self.queue.pos is None:
            return
        index = self.queue.next_index
        if index is not None:
            status = self.status_text
            self._load_queued(index)
            self.show_status(status, "saved")
        else:
            self.show_status(f"{self.status_text} · queue done: n for a new prompt", "saved")

    def _load_queued(self, index: int) -> None:
        parts = self.queue.show(index)
        self._show_queue()
        self._set_editor(parts)
        if self.app.model_state == "failed":
            self._clear_answers()
        else:
            self._start_sampling(parts, self.settings)

    def action_open_queue(self) -> None:
        self.app.push_screen(
            PathModal(
                "Open a prompt queue",
                'A text file with one prompt per line, or JSONL with a "prompt" (string or messages) per line.',
                ok="Open",
            ),
            self._queue_chosen,
        )

    def _queue_chosen(self, choice: PathChoice | None) -> None:
        if choice is None:
            return
        try:
            queue = PromptQueue.open(choice.path)
        except QueueError as e:
            self.app.notify_error(str(e), title="Cannot open the queue")
            return
        self.queue = queue
        self.app.notify(f"{len(queue)} prompts queued from {queue.name}", timeout=3)
        self._load_queued(0)
