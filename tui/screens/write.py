"""Write: type a prompt and both answers yourself; Ctrl+S saves the pair (origin "typed")."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static, TextArea

from mlx_dpo.errors import MlxDpoError
from tui.prompts import PromptParts
from tui.widgets import ModeBar


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
            yield Input(placeholder="system message (optional)", id="write-system", compact=True)
            prompt = TextArea(id="write-prompt", placeholder="The prompt (a user message)")
            prompt.border_title = "prompt"
            yield prompt
            with Horizontal(id="write-answers"):
                chosen = TextArea(id="write-chosen", placeholder="The better answer")
                chosen.border_title = "chosen (better)"
                yield chosen
                rejected = TextArea(id="write-rejected", placeholder="The worse answer")
                rejected.border_title = "rejected (worse)"
                yield rejected
            with Horizontal(id="write-buttons"):
                yield Button("ctrl+s save pair", id="write-save", variant="primary", compact=True)
                yield Button("ctrl+n clear", id="write-clear", compact=True)
                yield Static("", id="write-status")
        yield Footer()

    def on_mount(self) -> None:
        for button in self.query(Button):
            button.can_focus = False
        self.query_one("#write-prompt", TextArea).focus()

    def _status(self, text: str, style: str = "") -> None:
        status = self.query_one("#write-status", Static)
        status.update(Text(text))
        status.set_classes(f"-{style}" if style else "")

    def action_save(self) -> None:
        parts = PromptParts(self.query_one("#write-system", Input).value, self.query_one("#write-prompt", TextArea).text)
        chosen = self.query_one("#write-chosen", TextArea).text
        rejected = self.query_one("#write-rejected", TextArea).text
        problem = None
        if parts.empty:
            problem, focus = "The prompt is empty: type the prompt first.", "#write-prompt"
        elif not chosen.strip():
            problem, focus = "The chosen (better) answer is empty.", "#write-chosen"
        elif not rejected.strip():
            problem, focus = "The rejected (worse) answer is empty.", "#write-rejected"
        elif chosen.strip() == rejected.strip():
            problem, focus = "Chosen and rejected are identical: a pair needs two different answers.", "#write-rejected"
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

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "write-save":
            self.action_save()
        elif event.button.id == "write-clear":
            self.action_clear()
