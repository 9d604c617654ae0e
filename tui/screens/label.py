"""Label: type (or queue) a prompt, sample two answers, pick the better one.

The screen never touches the model: it asks the app's `ModelWorker` for two answers and follows
the `SampleStarted` / `AnswerChunk` / `AnswerDone` / `SampleFailed` messages for the newest request.
Labels are written to the store on the event loop (one small committed transaction each), so
"saved" is only shown after `add_pair` has returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static, TextArea

from mlx_dpo.errors import MlxDpoError
from tui import messages as msg
from tui.backend import SampleSettings
from tui.modals import EditAnswersModal, EditedAnswers, PathChoice, PathModal, SettingsModal
from tui.prompts import PromptParts, QueueError, read_prompt_queue
from tui.widgets import AnswerPane, ModeBar, ModelStatus


@dataclass(frozen=True)
class LabelRecord:
    """What a label saved, so `u` can put the screen back exactly as it was."""

    kind: str  # "pair" or "skip"
    id: int
    parts: PromptParts
    answers: tuple[str, str]
    queue_pos: int | None


def _two(answers) -> tuple[str, str]:
    """The first two of some stored answers, padded with empty ones (a tie may have kept fewer)."""
    return tuple((list(answers) + ["", ""])[:2])


class LabelScreen(Screen):
    # Descriptions are short for the footer; tooltips name the command in the command palette.
    BINDINGS = [
        Binding("ctrl+s", "sample", "Sample", tooltip="Sample two answers to the prompt"),
        Binding("1", "pick(1)", "better", tooltip="Answer 1 is better: save the pair"),
        Binding("2", "pick(2)", "better", tooltip="Answer 2 is better: save the pair"),
        Binding("t", "tie", "Tie", tooltip="Tie: record it, save no pair"),
        Binding("e", "edit", "Edit", tooltip="Edit the answers before picking"),
        Binding("r", "resample", "Resample", tooltip="Resample both answers"),
        Binding("u", "undo", "Undo", tooltip="Undo the last label"),
        Binding("n", "next", "Next", tooltip="Next prompt (from the queue, or a new one)"),
        Binding("o", "open_queue", "Queue", tooltip="Open a prompt queue file"),
        Binding("s", "settings", "Settings", tooltip="Sampling settings"),
        Binding("p", "focus_prompt", "Prompt", tooltip="Edit the prompt"),
        Binding("escape", "leave_editor", "Leave editor", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="label-screen")
        self.settings = SampleSettings()
        self.request_id: int | None = None
        self.sampled: PromptParts | None = None  # the prompt the shown answers answer
        self.done = [False, False]
        self.edited = False
        self.labeled: str | None = None  # "pair #3" or "tie" once the shown answers are labeled
        self.candidate_id: int | None = None  # the shown answers, kept in the store until judged
        self.candidate_sampler: str | None = None  # who sampled answers restored from an earlier session
        self.history: list[LabelRecord] = []
        self.queue: list[list[dict]] = []
        self.queue_name = ""
        self.queue_pos: int | None = None  # index of the queued prompt in the editor
        self.context: tuple[dict, ...] = ()  # earlier turns of a queued multi-turn prompt
        self.status_text = ""

    # --- layout ---

    def compose(self) -> ComposeResult:
        yield ModeBar("label")
        with Horizontal(id="label-status-row"):
            yield ModelStatus(id="model-status")
            yield Static("", id="queue-status")
        with Vertical(id="prompt-box"):
            yield Input(placeholder="system message (optional)", id="system", compact=True)
            prompt = TextArea(id="prompt", placeholder="Type a prompt, then ctrl+s to sample two answers")
            prompt.border_title = "prompt"
            yield prompt
            with Horizontal(id="prompt-buttons"):
                yield Button("ctrl+s sample", id="sample", variant="primary", compact=True)
                yield Button("s settings", id="settings", compact=True)
                yield Button("o open queue", id="open-queue", compact=True)
        with Horizontal(id="answers"):
            yield AnswerPane(1, id="answer-1")
            yield AnswerPane(2, id="answer-2")
        with Horizontal(id="label-buttons"):
            yield Button("1 better", id="pick-1", variant="success", compact=True)
            yield Button("2 better", id="pick-2", variant="success", compact=True)
            yield Button("t tie", id="tie", compact=True)
            yield Button("e edit", id="edit", compact=True)
            yield Button("r resample", id="resample", compact=True)
            yield Button("u undo", id="undo", compact=True)
            yield Button("n next", id="next", compact=True)
        yield Static("", id="label-status")
        yield Footer()

    def on_mount(self) -> None:
        self.settings = self.app.initial_settings
        for button in self.query(Button):
            button.can_focus = False  # keys drive the screen; buttons are for the mouse
        self._show_settings()
        self._show_queue()
        self.query_one("#prompt", TextArea).focus()
        self.call_after_refresh(self.app.first_screen_drawn)
        self._restore_unjudged()

    # --- small helpers ---

    @property
    def store(self):
        return self.app.store

    def _pane(self, slot: int) -> AnswerPane:
        return self.query_one(f"#answer-{slot}", AnswerPane)

    def _editor_parts(self) -> PromptParts:
        return PromptParts(
            self.query_one("#system", Input).value, self.query_one("#prompt", TextArea).text, self.context
        )

    def _set_editor(self, parts: PromptParts) -> None:
        self.context = parts.context
        self.query_one("#system", Input).value = parts.system
        prompt = self.query_one("#prompt", TextArea)
        prompt.text = parts.user
        turns = len(parts.context)
        prompt.border_title = f"prompt (after {turns} earlier turn{'s' * (turns != 1)})" if turns else "prompt"

    def answers(self) -> tuple[str, str]:
        return self._pane(1).text, self._pane(2).text

    def _status(self, text: str, style: str = "") -> None:
        self.status_text = text
        status = self.query_one("#label-status", Static)
        status.update(Text(text))
        status.set_classes(f"-{style}" if style else "")

    def _show_settings(self) -> None:
        self.query_one("#prompt", TextArea).border_subtitle = self.settings.summary()

    def _show_queue(self) -> None:
        label = self.query_one("#queue-status", Static)
        if not self.queue:
            label.update(Text("no queue · o to open one"))
        else:
            pos = 0 if self.queue_pos is None else self.queue_pos + 1
            label.update(Text(f"queue {self.queue_name} {pos}/{len(self.queue)}"))

    def _focus_answers(self) -> None:
        self._pane(1).focus()

    @property
    def state(self) -> str:
        """idle (no answers), sampling, ready (both answers, not labeled yet) or labeled."""
        if self.sampled is None:
            return "idle"
        if self.labeled:
            return "labeled"
        return "ready" if all(self.done) else "sampling"

    def _show_answers(self, parts: PromptParts, answers: tuple[str, str], subtitle: str) -> None:
        """Complete answers to `parts` on screen, ready to be judged."""
        self._clear_answers()
        self._set_editor(parts)
        self.sampled = parts
        self.done = [True, True]
        for slot, text in zip((1, 2), answers):
            self._pane(slot).set_text(text, subtitle)

    def _restore_unjudged(self) -> None:
        """Answers sampled in an earlier session and never judged come back on screen."""
        try:
            candidates = self.store.list_candidates()
        except Exception:  # noqa: BLE001 - restoring is a convenience; the app must start regardless
            return
        if not candidates:
            return
        newest = candidates[-1]  # only one is kept at a time; older ones are leftovers of a crash
        for old in candidates[:-1]:
            self._forget_candidate(old.id)
        self._show_answers(PromptParts.from_messages(newest.prompt), _two(newest.answers), "restored")
        self.candidate_id, self.candidate_sampler = newest.id, newest.sampler
        self._status("answers from the last session, not judged yet: 1 / 2 pick · t tie · r resample", "warning")
        self._focus_answers()

    def _keep_candidate(self) -> None:
        """Both answers are in: keep them in the store so quitting before a judgement loses nothing."""
        try:
            self.candidate_id = self.store.add_candidate(
                self.sampled.messages(), list(self.answers()), sampler=self.sampler
            ).id
        except Exception as e:  # noqa: BLE001 - a convenience: labeling goes on without it
            self.candidate_id = None
            self.app.notify_warning(f"Could not keep the answers for a later session: {e}")

    def _drop_candidate(self) -> None:
        if self.candidate_id is not None:
            candidate_id, self.candidate_id = self.candidate_id, None
            self._forget_candidate(candidate_id)

    def _forget_candidate(self, candidate_id: int) -> None:
        try:
            self.store.delete_candidate(candidate_id)
        except Exception:  # noqa: BLE001 - already gone, or the store is closing: nothing to undo
            pass

    @property
    def sampler(self) -> str | None:
        """Who sampled the shown answers: the current model, or the one named by a restored candidate."""
        return self.candidate_sampler or self.app.sampler

    def _clear_answers(self) -> None:
        self._drop_candidate()  # answers replaced or skipped unjudged: a restart should not bring them back
        self.candidate_sampler = None
        self.app.worker.cancel()
        self.request_id = None
        self.sampled = None
        self.done = [False, False]
        self.edited = False
        self.labeled = None
        for slot in (1, 2):
            self._pane(slot).set_text("")
            self._pane(slot).set_title()

    # --- sampling ---

    def action_sample(self) -> None:
        parts = self._editor_parts()
        if parts.empty:
            self.app.notify_error("The prompt is empty: type a prompt first, then press ctrl+s.", title="Nothing to sample")
            self.query_one("#prompt", TextArea).focus()
            return
        if self.app.model_state == "failed":
            self.app.notify_error(f"Cannot sample: the model failed to load ({self.app.model_error})")
            return
        self._start_sampling(parts, self.settings)

    def _start_sampling(self, parts: PromptParts, settings: SampleSettings) -> None:
        self._clear_answers()
        self.sampled = parts
        self.request_id = self.app.worker.sample(parts.messages(), settings)
        waiting = "sampling…" if self.app.model_state == "ready" else "waiting for the model to load…"
        for slot in (1, 2):
            self._pane(slot).set_text("", waiting if slot == 1 else "queued")
        self._status("")
        self._focus_answers()

    def action_resample(self) -> None:
        if self.settings.seed is not None and self.sampled is not None:
            # A fixed seed would give the same two answers again: move on to the next pair of seeds.
            self.settings = self.settings.with_seed(self.settings.seed + 2)
            self._show_settings()
        self.action_sample()

    def on_sample_started(self, message: msg.SampleStarted) -> None:
        message.stop()
        if message.request_id != self.request_id:
            return
        for slot, seed in zip((1, 2), message.seeds):
            self._pane(slot).set_title(f"seed {seed}")
        self._pane(1).border_subtitle = "streaming…"

    def on_answer_chunk(self, message: msg.AnswerChunk) -> None:
        message.stop()
        if message.request_id != self.request_id:
            return  # an older request still flushing
        pane = self._pane(message.slot)
        pane.append(message.text)
        pane.border_subtitle = "streaming…"

    def on_answer_done(self, message: msg.AnswerDone) -> None:
        message.stop()
        if message.request_id != self.request_id:
            return
        pane = self._pane(message.slot)
        pane.set_text(message.text, "done" if message.text.strip() else "done (empty answer)")
        self.done[message.slot - 1] = True
        if message.slot == 1:
            self._pane(2).border_subtitle = "streaming…"
        if all(self.done):
            self._keep_candidate()
            hint = "1 / 2 pick the better answer · t tie · e edit · r resample"
            if self.answers()[0].strip() == self.answers()[1].strip():
                hint = "the two answers are identical: r resample · e edit · t tie"
            self._status(hint)

    def on_sample_failed(self, message: msg.SampleFailed) -> None:
        message.stop()
        if message.request_id != self.request_id:
            return
        self.app.notify_error(f"Sampling failed: {message.error}")
        self._status("sampling failed", "error")
        self.sampled = None

    # --- labels ---

    def _can_label(self) -> bool:
        state = self.state
        if state == "idle":
            self.app.notify_warning("Nothing to label yet: type a prompt and press ctrl+s to sample two answers.")
        elif state == "sampling":
            self.app.notify_warning("Wait until both answers are complete (or press r to resample).")
        elif state == "labeled":
            self.app.notify_warning(f"Already labeled ({self.labeled}): press r to resample or n for the next prompt.")
        return state == "ready"

    def action_pick(self, slot: int) -> None:
        if not self._can_label():
            return
        answers = self.answers()
        if answers[0].strip() == answers[1].strip():
            self.app.notify_error(
                "The two answers are identical, so they cannot form a pair. "
                "Press r to resample, e to edit one of them, or t to record a tie.",
                title="Not saved",
            )
            return
        chosen, rejected = answers[slot - 1], answers[2 - slot]
        try:
            pair = self.store.add_pair(
                self.sampled.messages(), chosen, rejected, origin="sampled", sampler=self.sampler,
                note="answers edited before labeling" if self.edited else None, candidate_id=self.candidate_id,
            )
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Not saved")
            return
        # add_pair has committed (and deleted the candidate with it): only now is the label reported as saved.
        self.candidate_id = None
        self.labeled = f"pair #{pair.id}"
        self.history.append(LabelRecord("pair", pair.id, self.sampled, answers, self.queue_pos))
        self._status(f"saved pair #{pair.id} (answer {slot} chosen)", "saved")
        self.app.notify(f"saved pair #{pair.id}", title="Saved", timeout=2)
        self.app.store_changed()
        self._advance_queue()

    def action_tie(self) -> None:
        if not self._can_label():
            return
        answers = self.answers()
        try:
            skip = self.store.add_skip(self.sampled.messages(), "tie", answers=list(answers), sampler=self.sampler,
                                       candidate_id=self.candidate_id)
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Not saved")
            return
        self.candidate_id = None
        self.labeled = "tie"
        self.history.append(LabelRecord("skip", skip.id, self.sampled, answers, self.queue_pos))
        self._status("tie recorded: no pair saved", "saved")
        self.app.notify("tie recorded (no pair saved)", timeout=2)
        self.app.store_changed()
        self._advance_queue()

    def action_edit(self) -> None:
        if not self._can_label():
            return
        first, second = self.answers()
        self.app.push_screen(EditAnswersModal(first, second), self._edited)

    def _edited(self, result: EditedAnswers | None) -> None:
        self._focus_answers()
        if result is None:
            return
        if result.answers != self.answers():
            self.edited = True
            for slot, text in zip((1, 2), result.answers):
                self._pane(slot).set_text(text, "edited")
            self._drop_candidate()
            self._keep_candidate()  # a quit now brings back the edited answers
        if result.pick is not None:
            self.action_pick(result.pick)
        else:
            self._status("answers edited: 1 / 2 pick the better answer")

    def action_undo(self) -> None:
        try:
            result = self.store.undo_last_label()
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Undo failed")
            return
        if result is None:
            self.app.notify_warning("Nothing to undo.")
            return
        item = result.pair if result.kind == "pair" else result.skip
        record = next((r for r in reversed(self.history) if r.kind == result.kind and r.id == item.id), None)
        if record is not None:
            self.history.remove(record)
            parts, answers = record.parts, record.answers
            if record.queue_pos is not None and self.queue:
                self.queue_pos = record.queue_pos
                self._show_queue()
        else:  # labeled in an earlier session: rebuild the screen from the store's copy
            parts = PromptParts.from_messages(item.prompt)
            if result.kind == "pair":
                answers = (item.chosen, item.rejected)
            else:
                answers = _two(item.answers)
        self._show_answers(parts, answers, "restored")
        self.candidate_sampler = item.sampler  # labeling it again keeps who sampled it
        self._keep_candidate()  # unjudged again, so kept like freshly sampled answers
        what = f"pair #{item.id}" if result.kind == "pair" else "tie"
        self._status(f"undid {what}: label it again", "warning")
        self.app.notify(f"undid {what}", timeout=2)
        self.app.store_changed()
        self._focus_answers()

    # --- prompts and queue ---

    def action_next(self) -> None:
        if self.queue and (self.queue_pos is None or self.queue_pos + 1 < len(self.queue)):
            self._load_queued((-1 if self.queue_pos is None else self.queue_pos) + 1)
            return
        if self.queue:
            self.app.notify("The queue is done: every prompt has been shown.", timeout=4)
            self.queue, self.queue_pos, self.queue_name = [], None, ""
            self._show_queue()
        self._clear_answers()
        self._set_editor(PromptParts())
        self._status("")
        self.query_one("#prompt", TextArea).focus()

    def _advance_queue(self) -> None:
        """After a label, a queue moves on by itself (the saved status stays visible)."""
        if self.queue and self.queue_pos is not None and self.queue_pos + 1 < len(self.queue):
            status = self.status_text
            self._load_queued(self.queue_pos + 1)
            self._status(status, "saved")
        elif self.queue and self.queue_pos is not None:
            self._status(f"{self.status_text} · queue done: n for a new prompt", "saved")

    def _load_queued(self, index: int) -> None:
        self.queue_pos = index
        self._show_queue()
        parts = PromptParts.from_messages(self.queue[index])
        self._set_editor(parts)
        if self.app.model_state == "failed":
            self._clear_answers()
        else:
            self._start_sampling(parts, self.settings)

    def action_open_queue(self) -> None:
        self.app.push_screen(
            PathModal(
                "Open a prompt queue",
                "A text file with one prompt per line, or JSONL with a \"prompt\" (string or messages) per line.",
                ok="Open",
            ),
            self._queue_chosen,
        )

    def _queue_chosen(self, choice: PathChoice | None) -> None:
        if choice is None:
            return
        try:
            prompts = read_prompt_queue(choice.path)
        except QueueError as e:
            self.app.notify_error(str(e), title="Cannot open the queue")
            return
        self.queue, self.queue_name = prompts, Path(choice.path).name
        self.app.notify(f"{len(prompts)} prompts queued from {self.queue_name}", timeout=3)
        self._load_queued(0)

    # --- settings and focus ---

    def action_settings(self) -> None:
        self.app.push_screen(SettingsModal(self.settings), self._settings_chosen)

    def _settings_chosen(self, settings: SampleSettings | None) -> None:
        if settings is not None:
            self.settings = settings
            self._show_settings()

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", TextArea).focus()

    def action_leave_editor(self) -> None:
        if isinstance(self.focused, (TextArea, Input)):
            self._focus_answers()

    @on(Button.Pressed)
    async def _button(self, event: Button.Pressed) -> None:
        event.stop()
        button = event.button.id or ""
        actions = {
            "sample": "sample", "settings": "settings", "open-queue": "open_queue", "pick-1": "pick(1)",
            "pick-2": "pick(2)", "tie": "tie", "edit": "edit", "resample": "resample", "undo": "undo", "next": "next",
        }
        if button in actions:
            await self.run_action(actions[button])
