"""Write: type a prompt and both answers yourself; Ctrl+S saves the pair (origin "typed")."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, TextArea

from mlx_dpo.api import IDENTICAL_ANSWERS, TWO_DIFFERENT_ANSWERS, Problem, pair_problem
from mlx_dpo.errors import MlxDpoError
from tui.widgets import ModeBar, ScreenButton, StatusLine, prompt_fields, read_prompt


class WriteScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save pair", tooltip="Save the typed pair"),
        Binding("ctrl+n", "clear", "Clear", tooltip="Clear the form"),
        Binding("escape", "leave_editor", "Leave editor", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="write-screen")

    def compose(self) -> ComposeResult:
        yield ModeBar("write")
        with Vertical(id="write-form"):
            yield from prompt_fields("write-system", "write-prompt", "The prompt (a user message)")
            with Horizontal(id="write-answers"):
                chosen = TextArea(id="write-chosen", placeholder="The better answer")
                chosen.border_title = "chosen (better)"
                yield chosen
                rejected = TextArea(id="write-rejected", placeholder="The worse answer")
                rejected.border_title = "rejected (worse)"
                yield rejected
            with Horizontal(id="write-buttons"):
                yield ScreenButton("ctrl+s save pair", "save", id="write-save", variant="primary")
                yield ScreenButton("ctrl+n clear", "clear", id="write-clear")
                yield StatusLine(id="write-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#write-prompt", TextArea).focus()

    def _status(self, text: str, style: str = "") -> None:
        self.query_one(StatusLine).show(text, style)

    def action_save(self) -> None:
        parts = read_prompt(self, "write-system", "write-prompt")
        chosen = self.query_one("#write-chosen", TextArea).text
        rejected = self.query_one("#write-rejected", TextArea).text
        problem, focus = _problem_text(pair_problem(parts.messages(), chosen, rejected))
        if problem:
            self.app.notify_error(problem, title="Not saved")
            self._status(problem, "error")
            self.query_one(focus).focus()
            return
        try:
            # label=False: a typed pair is not a labeling action, so `u` on the Label screen never removes it.
            pair = self.app.store.add_pair(parts.messages(), chosen, rejected, origin="typed", label=False)
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Not saved")
            self._status(str(e), "error")
            return
        self._status(f"saved pair #{pair.id}", "saved")
        self.app.notify(f"saved pair #{pair.id}", title="Saved", timeout=2)
        self.app.store_changed()
        # Keep the prompt (several pairs per prompt are common); clear the answers for the next one.
        self.query_one("#write-chosen", TextArea).text = ""
        self.query_one("#write-rejected", TextArea).text = ""
        self.query_one("#write-chosen", TextArea).focus()

    def action_clear(self) -> None:
        self.query_one("#write-system", Input).value = ""
        for area in self.query(TextArea):
            area.text = ""
        self._status("")
        self.query_one("#write-prompt", TextArea).focus()

    def action_leave_editor(self) -> None:
        self.set_focus(None)


def _problem_text(problem: Problem | None) -> tuple[str | None, str]:
    """What the form says about the first rule the pair breaks (mlx_dpo.data.pairs), and the field to focus."""
    field = problem[0] if problem else None
    if problem == IDENTICAL_ANSWERS:
        return f"Chosen and rejected are identical: {TWO_DIFFERENT_ANSWERS}.", "#write-rejected"
    if field == "chosen":
        return "The chosen (better) answer is empty.", "#write-chosen"
    if field == "rejected":
        return "The rejected (worse) answer is empty.", "#write-rejected"
    if problem:
        return "The prompt is empty: type the prompt first.", "#write-prompt"
    return None, ""
