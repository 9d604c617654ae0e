"""Compare: one prompt, answers from two versions side by side (same seed); 1 or 2 saves a pair.

Versions are picked with `a` / `b` (cycling base, v1, v2, …); the default is the base against the
version the app samples from. The worker answers a comparison itself (`ModelWorker.compare`): the
current version uses the loaded model, any other is loaded for the request and dropped after it.
The saved pair has origin "compared", and names the two versions that answered. Following the
request is `TwoAnswersScreen`'s job (the same `SamplingState` as the Label screen).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static, TextArea

from mlx_dpo.errors import MlxDpoError
from tui.sampling import SLOTS
from tui.screens.two_answers import EDITOR_BINDINGS, PICK_BINDINGS, TwoAnswersScreen
from tui.widgets import AnswerPane, ModeBar, ScreenButton, StatusLine, prompt_fields, read_prompt


class CompareScreen(TwoAnswersScreen):
    PANE_ID = "compare-{slot}"
    JUDGED = "saved"

    BINDINGS = [
        Binding("ctrl+s", "compare", "Compare", tooltip="Answer the prompt with both versions"),
        *PICK_BINDINGS,
        Binding("a", "cycle(0)", "Version 1", tooltip="Change the version of answer 1"),
        Binding("b", "cycle(1)", "Version 2", tooltip="Change the version of answer 2"),
        *EDITOR_BINDINGS,
    ]

    def __init__(self) -> None:
        super().__init__(id="compare-screen")
        self.versions: list[tuple[str, str | None]] = [("base", None)]  # (label, adapter path)
        self.choice: list[tuple[str, str | None] | None] = [None, None]  # None: the default

    def compose(self) -> ComposeResult:
        yield ModeBar("compare")
        yield Static("", id="compare-versions")
        with Vertical(id="compare-prompt-box"):
            yield from prompt_fields(
                "compare-system", "compare-prompt", "A prompt, then ctrl+s to compare two versions"
            )
        with Horizontal(id="compare-answers"):
            yield AnswerPane(1, id="compare-1")
            yield AnswerPane(2, id="compare-2")
        with Horizontal(id="compare-buttons"):
            yield ScreenButton("ctrl+s compare", "compare", id="compare-run", variant="primary")
            yield ScreenButton("1 better", "pick(1)", id="compare-pick-1", variant="success")
            yield ScreenButton("2 better", "pick(2)", id="compare-pick-2", variant="success")
            yield StatusLine(id="compare-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#compare-prompt", TextArea).focus()
        self._refresh_versions()

    def on_screen_resume(self) -> None:
        self._refresh_versions()

    # --- versions ---

    def _refresh_versions(self) -> None:
        try:
            rounds = [r for r in self.app.store.list_rounds() if r.status == "finished"]
        except MlxDpoError:
            rounds = []
        self.versions = [("base", None)] + [(r.label, r.adapter_path) for r in rounds]
        self._show_versions()

    def pair(self) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
        """The two versions compared: chosen with a/b, else the base against the current version."""
        current = (self.app.current_version_label(), self.app.worker.adapter_path)
        defaults = (("base", None), current)
        return tuple(c if c is not None else d for c, d in zip(self.choice, defaults))  # type: ignore[return-value]

    def _show_versions(self) -> None:
        one, two = self.pair()
        self.query_one("#compare-versions", Static).update(
            Text(f"answer 1: {one[0]} (a to change) · answer 2: {two[0]} (b to change) · same seed")
        )
        for slot, version in zip(SLOTS, (one, two)):
            self.pane(slot).set_title(version[0])

    def action_cycle(self, side: int) -> None:
        current = self.pair()[side]
        labels = [v[0] for v in self.versions]
        index = labels.index(current[0]) if current[0] in labels else -1
        self.choice[side] = self.versions[(index + 1) % len(self.versions)]
        self._show_versions()

    # --- comparing and saving ---

    def action_compare(self) -> None:
        parts = read_prompt(self, "compare-system", "compare-prompt")
        if parts.empty:
            self.app.notify_error("The prompt is empty: type a prompt first.", title="Nothing to compare")
            return
        if self.refuse_without_model():
            return
        one, two = self.pair()
        for slot in SLOTS:
            self.pane(slot).set_text("", "sampling…" if slot == 1 else "queued")
        request_id = self.app.compare_request(parts.messages(), self.app.get_screen("label").settings, (one[1], two[1]))
        self.sampling.start(request_id, parts, sources=(one[0], two[0]))
        self.show_status(f"comparing {one[0]} and {two[0]}…")

    def action_pick(self, slot: int) -> None:
        if self.state != "ready":
            self.app.notify_warning("Nothing to pick: compare two versions first (ctrl+s).")
            return
        chosen, rejected = self.sampling.chosen_rejected(slot)
        one, two = self.sampling.sources  # the versions that answered, even if a/b changed them since
        try:
            pair = self.app.store.add_pair(
                self.sampling.prompt.messages(),
                chosen,
                rejected,
                origin="compared",
                sampler=f"{self.app.worker.model or 'default'}:{one} vs {two}",
            )
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Not saved")
            return
        self.sampling.judge(f"pair #{pair.id}")
        self.show_status(f"saved pair #{pair.id} (answer {slot} chosen)", "saved")
        self.app.store_changed()

    # The newest request's events (TwoAnswersScreen drops those of older requests).

    def show_started(self, seeds: tuple[int, int]) -> None:
        self.show_status(f"comparing with seed {seeds[0]}…")

    def show_done(self, slot: int, text: str) -> None:
        super().show_done(slot, text)
        if self.state == "ready":
            self.show_status("1 or 2: which answer is better?")

    def show_failed(self, error: str) -> None:
        self.show_status(f"failed: {error}", "error")
        self.app.notify_error(error, title="Comparison failed")

    def action_focus_prompt(self) -> None:
        self.query_one("#compare-prompt", TextArea).focus()

    def action_leave_editor(self) -> None:
        self.set_focus(None)
