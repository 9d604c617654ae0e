"""The base of the screens that show two answers from the model worker: Label and Compare.

It holds the screen's `SamplingState` (tui.sampling) and feeds it the worker's sampling events (the
app routes them here in `WorkerEvent` messages): an event of an older request is dropped, and the
newest request's events reach the `show_*` hooks, which the screens override to draw them. So the
request rules are written once, in plain Python, and the screens only draw.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.screen import Screen

from tui.messages import WorkerEvent
from tui.sampling import SamplingState
from tui.widgets import AnswerPane, StatusLine
from tui.workers.events import SAMPLE_EVENTS, AnswerChunk, AnswerDone, SampleFailed, SampleStarted

# Both screens save a pair with 1 / 2 and edit the prompt with p; each lists these in its own BINDINGS.
PICK_BINDINGS = [
    Binding("1", "pick(1)", "better", tooltip="Answer 1 is better: save the pair"),
    Binding("2", "pick(2)", "better", tooltip="Answer 2 is better: save the pair"),
]
EDITOR_BINDINGS = [
    Binding("p", "focus_prompt", "Prompt", tooltip="Edit the prompt"),
    Binding("escape", "leave_editor", "Leave editor", show=False),
]


class TwoAnswersScreen(Screen):
    PANE_ID = "answer-{slot}"  # the ids of the screen's two AnswerPanes
    JUDGED = "judged"  # what `state` calls answers that were saved (as the screen's tests and hints say)

    SHUFFLE = False  # show each request's answers in a random pane order (tui.sampling.shown_order)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sampling = SamplingState(shuffle=self.SHUFFLE)

    @property
    def state(self) -> str:
        """idle (no answers), sampling, ready (both answers, not judged yet), JUDGED, or failed."""
        state = self.sampling.state
        return self.JUDGED if state == "judged" else state

    @property
    def request_id(self) -> int | None:
        return self.sampling.request_id

    def answers(self) -> tuple[str, str]:
        return self.sampling.answers

    def pane(self, slot: int) -> AnswerPane:
        return self.query_one("#" + self.PANE_ID.format(slot=slot), AnswerPane)

    @property
    def status_text(self) -> str:
        return self.query_one(StatusLine).text

    def show_status(self, text: str, style: str = "") -> None:
        self.query_one(StatusLine).show(text, style)

    def refuse_without_model(self) -> bool:
        """True, with the reason shown, when the model failed to load: nothing can be sampled."""
        if self.app.model_state != "failed":
            return False
        self.app.notify_error(f"Cannot sample: the model failed to load ({self.app.model_error})")
        return True

    # --- the worker's events for the newest request (older ones stop here) ---

    def on_worker_event(self, message: WorkerEvent) -> None:
        message.stop()  # the app routes only this screen's events here: sampling, and Label's suggestions
        event = message.event
        if not isinstance(event, SAMPLE_EVENTS):
            self.show_other(event)
            return
        if not self.sampling.apply(event):
            return
        match event:  # the hooks get panes (tui.sampling: the Label screen may show slot 1 in pane 2)
            case SampleStarted():
                self.show_started(self.sampling.pane_seeds)
            case AnswerChunk(slot=slot, text=text):
                self.show_chunk(self.sampling.pane_of(slot), text)
            case AnswerDone(slot=slot):
                pane = self.sampling.pane_of(slot)
                self.show_done(pane, self.sampling.answers[pane - 1])  # an Answer: it knows if it finished
            case SampleFailed(error=error):
                self.show_failed(error)

    # --- drawing, overridden by the screens ---

    def show_started(self, seeds: tuple[int, int]) -> None:
        pass

    def show_chunk(self, slot: int, text: str) -> None:
        self.pane(slot).append(text)

    def show_done(self, slot: int, text: str) -> None:
        self.pane(slot).set_text(text, "done")

    def show_failed(self, error: str) -> None:
        pass

    def show_other(self, event) -> None:
        """An event about the shown answers that is not the worker's sampling (Label: a judge's suggestion)."""
