"""Which model the app samples from, and whether it is still loading: a progress bar and a line of text."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

MARKS = {"loading": "", "ready": "● ", "failed": "✗ "}


class ModelStatus(Horizontal):
    """Follows the app's `model_status` reactive: (state, step, total, text), state "loading", "ready" or "failed"."""

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=2, show_eta=False, show_percentage=False, id="model-progress")
        yield Static("", id="model-text")

    def on_mount(self) -> None:
        self.watch(self.app, "model_status", self._show)

    def _show(self, status: tuple[str, int, int, str]) -> None:
        state, step, total, text = status
        bar = self.query_one(ProgressBar)
        bar.update(total=total, progress=step)
        bar.display = state == "loading"
        for name in MARKS:
            self.set_class(state == name, f"-{name}")
        self.query_one("#model-text", Static).update(Text(MARKS[state] + text))
