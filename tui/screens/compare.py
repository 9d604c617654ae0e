"""Compare: one prompt, answers from two versions side by side (same seed); 1 or 2 saves a pair.

Versions are picked with `a` / `b` (cycling base, v1, v2, …); the default is the base against the
version the app samples from. The worker answers a comparison itself (`ModelWorker.compare`): the
current version uses the loaded model, any other is loaded for the request and dropped after it.
The saved pair has origin "compared".
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static, TextArea

from mlx_dpo.errors import MlxDpoError
from tui import messages as msg
from tui.prompts import PromptParts
from tui.widgets import AnswerPane, ModeBar


class CompareScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "compare", "Compare", tooltip="Answer the prompt with both versions"),
        Binding("1", "pick(1)", "better", tooltip="Answer 1 is better: save the pair"),
        Binding("2", "pick(2)", "better", tooltip="Answer 2 is better: save the pair"),
        Binding("a", "cycle(0)", "Version 1", tooltip="Change the version of answer 1"),
        Binding("b", "cycle(1)", "Version 2", tooltip="Change the version of answer 2"),
        Binding("p", "focus_prompt", "Prompt", tooltip="Edit the prompt"),
        Binding("escape", "leave_editor", "Leave editor", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="compare-screen")
        self.versions: list[tuple[str, str | None]] = [("base", None)]  # (label, adapter path)
        self.choice: list[tuple[str, str | None] | None] = [None, None]  # None: the default
        self.request_id: int | None = None
        self.sampled: PromptParts | None = None
        self.done = [False, False]
        self.saved: str | None = None

    def compose(self) -> ComposeResult:
        yield ModeBar("compare")
        yield Static("", id="compare-versions")
        with Vertical(id="compare-prompt-box"):
            yield Input(placeholder="system message (optional)", id="compare-system", compact=True)
            prompt = TextArea(id="compare-prompt", placeholder="A prompt, then ctrl+s to compare two versions")
            prompt.border_title = "prompt"
            yield prompt
        with Horizontal(id="compare-answers"):
            yield AnswerPane(1, id="compare-1")
            yield AnswerPane(2, id="compare-2")
        with Horizontal(id="compare-buttons"):
            yield Button("ctrl+s compare", id="compare-run", variant="primary", compact=True)
            yield Button("1 better", id="compare-pick-1", variant="success", compact=True)
            yield Button("2 better", id="compare-pick-2", variant="success", compact=True)
            yield Static("", id="compare-status")
        yield Footer()

    def on_mount(self) -> None:
        for button in self.query(Button):
            button.can_focus = False
        self.query_one("#compare-prompt", TextArea).focus()
        self._refresh_versions()

    def on_screen_resume(self) -> None:
        self._refresh_versions()

    # --- versions ---

    def _refresh_versions(self) -> None:
        try:
            rounds = [r for r in self.app.store.list_rounds() if r["status"] == "finished"]
        except MlxDpoError:
            rounds = []
        self.versions = [("base", None)] + [(f"v{r['version']}", r["adapter_path"]) for r in rounds]
        self._show_versions()

    def pair(self) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
        """The two versions compared: chosen with a/b, else the base against the current version."""
        current = (self.app.current_version_label(), self.app.worker.adapter_path)
        defaults = (("base", None), current)
        return tuple(c if c is not None else d for c, d in zip(self.choice, defaults))  # type: ignore[return-value]

    def _show_versions(self) -> None:
        one, two = self.pair()
        self.query_one("#compare-versions", Static).update(
            Text(f"answer 1: {one[0]} (a to change) · answer 2: {two[0]} (b to change) · same seed"))
        for slot, version in ((1, one), (2, two)):
            self.query_one(f"#compare-{slot}", AnswerPane).set_title(version[0])

    def action_cycle(self, side: int) -> None:
        current = self.pair()[side]
        labels = [v[0] for v in self.versions]
        index = labels.index(current[0]) if current[0] in labels else -1
        self.choice[side] = self.versions[(index + 1) % len(self.versions)]
        self._show_versions()

    # --- comparing and saving ---

    def action_compare(self) -> None:
        parts = PromptParts(self.query_one("#compare-system", Input).value, self.query_one("#compare-prompt", TextArea).text)
        if parts.empty:
            self.app.notify_error("The prompt is empty: type a prompt first.", title="Nothing to compare")
            return
        if self.app.model_state == "failed":
            self.app.notify_error(f"Cannot sample: the model failed to load ({self.app.model_error})")
            return
        one, two = self.pair()
        self.sampled, self.done, self.saved = parts, [False, False], None
        for slot in (1, 2):
            self.query_one(f"#compare-{slot}", AnswerPane).set_text("", "sampling…" if slot == 1 else "queued")
        self.request_id = self.app.compare_request(parts.messages(), self.app.get_screen("label").settings,
                                                   (one[1], two[1]))
        self._status(f"comparing {one[0]} and {two[0]}…")

    @property
    def state(self) -> str:
        if self.sampled is None:
            return "idle"
        if self.saved:
            return "saved"
        return "ready" if all(self.done) else "sampling"

    def action_pick(self, slot: int) -> None:
        if self.state != "ready":
            self.app.notify_warning("Nothing to pick: compare two versions first (ctrl+s).")
            return
        answers = [self.query_one(f"#compare-{s}", AnswerPane).text for s in (1, 2)]
        chosen, rejected = answers[slot - 1], answers[2 - slot]
        one, two = self.pair()
        try:
            pair = self.app.store.add_pair(self.sampled.messages(), chosen, rejected, origin="compared",
                                           sampler=f"{self.app.worker.model or 'default'}:{one[0]} vs {two[0]}")
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Not saved")
            return
        self.saved = f"pair #{pair.id}"
        self._status(f"saved pair #{pair.id} (answer {slot} chosen)", "saved")
        self.app.store_changed()

    def on_sample_started(self, message: msg.SampleStarted) -> None:
        if message.request_id == self.request_id:
            self._status(f"comparing with seed {message.seeds[0]}…")

    def on_answer_chunk(self, message: msg.AnswerChunk) -> None:
        if message.request_id == self.request_id:
            self.query_one(f"#compare-{message.slot}", AnswerPane).append(message.text)

    def on_answer_done(self, message: msg.AnswerDone) -> None:
        if message.request_id != self.request_id:
            return
        self.done[message.slot - 1] = True
        self.query_one(f"#compare-{message.slot}", AnswerPane).set_text(message.text, "done")
        if all(self.done):
            self._status("1 or 2: which answer is better?")

    def on_sample_failed(self, message: msg.SampleFailed) -> None:
        if message.request_id == self.request_id:
            self._status(f"failed: {message.error}", "error")
            self.app.notify_error(message.error, title="Comparison failed")

    def action_focus_prompt(self) -> None:
        self.query_one("#compare-prompt", TextArea).focus()

    def action_leave_editor(self) -> None:
        self.set_focus(None)

    def _status(self, text: str, style: str = "") -> None:
        status = self.query_one("#compare-status", Static)
        status.update(Text(text))
        status.set_classes(f"-{style}" if style else "")

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "compare-run":
            self.action_compare()
        elif event.button.id in ("compare-pick-1", "compare-pick-2"):
            self.action_pick(int(event.button.id[-1]))
