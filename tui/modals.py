"""Modal screens: ask for a path, confirm, edit two answers, view/edit a stored pair, sampling settings.

Each one dismisses with its result (None when cancelled with Escape), so callers use
`push_screen(modal, callback)` and never block the event loop. A button runs the same action as its
key (`Button(action="screen.…")`: the modal is the app's screen while it is open), so each choice is
written once, as an `action_…` method. The forms check a pair with the pair rules of
`mlx_dpo.data.pairs` (`pair_problem`, `same_answers`), as the store does.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Static, TextArea

from mlx_dpo.api import IDENTICAL_ANSWERS, TWO_DIFFERENT_ANSWERS, pair_problem, same_answers
from tui.prompts import PromptParts
from tui.widgets import prompt_fields, read_prompt
from tui.workers import SampleSettings


def cancel_button(label: str = "Cancel (esc)") -> Button:
    return Button(label, id="cancel", compact=True, action="screen.cancel")


class _Modal(ModalScreen):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def show_error(self, message: str) -> None:
        error = self.query_one(".modal-error", Static)
        error.update(Text(message))
        error.display = True


@dataclass(frozen=True)
class PathChoice:
    path: str
    skip_invalid: bool = False


class PathModal(_Modal):
    """Ask for a file path (queue, import, export). Enter accepts."""

    def __init__(self, title: str, hint: str, value: str = "", *, ok: str = "Open", skip_invalid_option: bool = False):
        super().__init__(classes="path-modal")
        self.title_text, self.hint, self.value, self.ok = title, hint, value, ok
        self.skip_invalid_option = skip_invalid_option

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Label(Text(self.title_text), classes="modal-title")
            yield Static(Text(self.hint), classes="modal-hint")
            yield Input(self.value, placeholder="path/to/file", id="path")
            if self.skip_invalid_option:
                yield Checkbox("skip invalid rows instead of refusing the file", id="skip-invalid")
            yield Static("", classes="modal-error")
            with Horizontal(classes="modal-buttons"):
                yield Button(f"{self.ok} (enter)", id="ok", variant="primary", compact=True, action="screen.ok")
                yield cancel_button()

    def on_mount(self) -> None:
        self.query_one(".modal-error").display = False
        self.query_one("#path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_ok()

    def action_ok(self) -> None:
        path = self.query_one("#path", Input).value.strip()
        if not path:
            self.show_error("Type a file path first.")
            return
        skip = self.skip_invalid_option and self.query_one("#skip-invalid", Checkbox).value
        self.dismiss(PathChoice(path, skip))


class ConfirmModal(_Modal):
    """Yes / no: `y` confirms, `n` or Escape cancels (Enter presses the focused button, Cancel at first)."""

    BINDINGS = [
        Binding("y", "confirm", "Yes"),
        Binding("n,escape", "cancel", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Delete") -> None:
        super().__init__(classes="confirm-modal")
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Static(Text(self.question), classes="modal-title")
            with Horizontal(classes="modal-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error", compact=True, action="screen.confirm")
                yield cancel_button("Cancel (n)")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def action_confirm(self) -> None:
        self.dismiss(True)


@dataclass(frozen=True)
class EditedAnswers:
    answers: tuple[str, str]
    pick: int | None = None  # 1 or 2: save right away with that answer chosen; None: back to the label screen


class EditAnswersModal(_Modal):
    """Both sampled answers, editable. Ctrl+S keeps the edits; the buttons also pick the better one."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "keep", "Keep edits"),
        Binding("f8", "pick(1)", "Save, 1 better"),
        Binding("f9", "pick(2)", "Save, 2 better"),
    ]

    def __init__(self, first: str, second: str) -> None:
        super().__init__(classes="edit-answers-modal")
        self.first, self.second = first, second

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box wide"):
            yield Label("Edit the answers, then pick the better one", classes="modal-title")
            with Horizontal(classes="edit-answers"):
                area = TextArea(self.first, id="edit-1", soft_wrap=True)
                area.border_title = "answer 1"
                yield area
                area = TextArea(self.second, id="edit-2", soft_wrap=True)
                area.border_title = "answer 2"
                yield area
            yield Static("", classes="modal-error")
            with Horizontal(classes="modal-buttons"):
                yield Button("Keep edits (ctrl+s)", id="keep", variant="primary", compact=True, action="screen.keep")
                yield Button(
                    "Save: 1 better (F8)", id="pick-1", variant="success", compact=True, action="screen.pick(1)"
                )
                yield Button(
                    "Save: 2 better (F9)", id="pick-2", variant="success", compact=True, action="screen.pick(2)"
                )
                yield cancel_button()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(".modal-error").display = False
        self.query_one("#edit-1", TextArea).focus()

    def _answers(self) -> tuple[str, str]:
        return self.query_one("#edit-1", TextArea).text, self.query_one("#edit-2", TextArea).text

    def action_keep(self) -> None:
        self.dismiss(EditedAnswers(self._answers()))

    def action_pick(self, slot: int) -> None:
        first, second = self._answers()
        if same_answers(first, second):
            self.show_error(f"The two answers are identical: {TWO_DIFFERENT_ANSWERS}.")
            return
        self.dismiss(EditedAnswers((first, second), slot))


@dataclass(frozen=True)
class PairEdits:
    prompt: list[dict]
    chosen: str
    rejected: str
    note: str


class PairModal(_Modal):
    """View and edit one stored pair. Ctrl+S saves the edits."""

    BINDINGS = [
        Binding("escape", "cancel", "Close"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, pair) -> None:
        super().__init__(classes="pair-modal")
        self.pair = pair
        self.parts = PromptParts.from_messages(pair.prompt)

    def compose(self) -> ComposeResult:
        p = self.pair
        where = f"pair #{p.id} · {p.split} · {p.origin}" + (f" · {p.sampler}" if p.sampler else "")
        with Vertical(classes="modal-box wide"):
            yield Label(Text(where), classes="modal-title")
            if self.parts.context:
                yield Static(
                    Text(
                        f"{len(self.parts.context)} earlier turn(s) are kept as they are; "
                        "the last user message is editable."
                    ),
                    classes="modal-hint",
                )
            yield from prompt_fields("pair-system", "pair-prompt", parts=self.parts)
            with Grid(classes="pair-answers"):
                chosen = TextArea(p.chosen, id="pair-chosen")
                chosen.border_title = "chosen (better)"
                yield chosen
                rejected = TextArea(p.rejected, id="pair-rejected")
                rejected.border_title = "rejected (worse)"
                yield rejected
            yield Input(p.note or "", placeholder="note (optional)", id="pair-note", compact=True)
            yield Static("", classes="modal-error")
            with Horizontal(classes="modal-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary", compact=True, action="screen.save")
                yield cancel_button("Close (esc)")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(".modal-error").display = False
        self.query_one("#pair-prompt", TextArea).focus()

    def action_save(self) -> None:
        parts = read_prompt(self, "pair-system", "pair-prompt", self.parts.context)
        chosen = self.query_one("#pair-chosen", TextArea).text
        rejected = self.query_one("#pair-rejected", TextArea).text
        problem = pair_problem(parts.messages(), chosen, rejected)  # the store's rules, the first one broken
        if problem == IDENTICAL_ANSWERS:
            self.show_error(f"Chosen and rejected are identical: {TWO_DIFFERENT_ANSWERS}.")
            return
        if problem is not None:
            answer = problem[0] in ("chosen", "rejected")
            self.show_error("Both answers need some text." if answer else "The prompt is empty.")
            return
        self.dismiss(PairEdits(parts.messages(), chosen, rejected, self.query_one("#pair-note", Input).value))


class SettingsModal(_Modal):
    """Sampling settings. Enter or Ctrl+S applies; a blank seed means a new random seed per sample."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "apply", "Apply"),
    ]

    def __init__(self, settings: SampleSettings) -> None:
        super().__init__(classes="settings-modal")
        self.settings = settings

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(classes="modal-box"):
            yield Label("Sampling settings", classes="modal-title")
            with Grid(classes="settings-grid"):
                yield Label("temperature (0 = greedy)")
                yield Input(f"{s.temperature:g}", id="temperature")
                yield Label("top-p")
                yield Input(f"{s.top_p:g}", id="top-p")
                yield Label("max tokens")
                yield Input(str(s.max_tokens), id="max-tokens")
                yield Label("seed (blank = random)")
                yield Input("" if s.seed is None else str(s.seed), id="seed")
            yield Static("", classes="modal-error")
            with Horizontal(classes="modal-buttons"):
                yield Button("Apply (enter)", id="apply", variant="primary", compact=True, action="screen.apply")
                yield cancel_button()

    def on_mount(self) -> None:
        self.query_one(".modal-error").display = False
        self.query_one("#temperature", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply()

    def action_apply(self) -> None:
        def value(field: str) -> str:
            return self.query_one(f"#{field}", Input).value.strip()

        try:
            try:
                temperature, top_p = float(value("temperature")), float(value("top-p"))
            except ValueError:
                raise ValueError("temperature and top-p must be numbers") from None
            try:
                max_tokens = int(value("max-tokens"))
                seed = int(value("seed")) if value("seed") else None
            except ValueError:
                raise ValueError("max tokens and seed must be whole numbers") from None
            settings = SampleSettings(temperature, top_p, max_tokens, seed)
            settings.check()
        except ValueError as e:
            self.show_error(str(e))
            return
        self.dismiss(settings)
