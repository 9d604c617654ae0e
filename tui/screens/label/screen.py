"""The Label screen: keys and the worker's messages in, the panes and the status line out.

The screen never touches the model: it asks the app's model worker for two answers and feeds the
worker's events for them to a `tui.sampling.SamplingState`, which knows the newest request and when
both answers are in; the screen draws what it holds. Each request's answers are shown in a random pane
order (`SHUFFLE`), and a saved pair records which of its answers was shown first (`shown_first`).
A program judge's suggestion and a prompt file given at start are `online.py`'s. Labels are written to
the store on the event loop (one small committed transaction each), so "saved" is only shown after
`add_pair` has returned.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input, Static, TextArea

from mlx_dpo.api import is_finished
from mlx_dpo.errors import MlxDpoError
from tui.conversation import Conversation
from tui.modals import EditAnswersModal, EditedAnswers, SettingsModal
from tui.prompts import PromptParts, PromptQueue
from tui.sampling import SLOTS
from tui.screens.label import online, ratings
from tui.screens.label.candidates import KeptCandidate
from tui.screens.label.conversation import CONVERSATION_BINDINGS, ConversationActions
from tui.screens.label.feedback import mark_answer
from tui.screens.label.history import LabelHistory, LabelRecord, two
from tui.screens.label.queue import QueueActions
from tui.screens.two_answers import EDITOR_BINDINGS, PICK_BINDINGS, TwoAnswersScreen
from tui.widgets import (
    AnswerPane,
    ConversationView,
    ModeBar,
    ModelStatus,
    ScreenButton,
    StatusLine,
    prompt_fields,
    read_prompt,
)
from tui.widgets.rating_panel import RatingPanel
from tui.workers import SampleSettings
from tui.workers.events import Suggestion


class LabelScreen(ConversationActions, QueueActions, TwoAnswersScreen):
    JUDGED = "labeled"
    SHUFFLE = True  # the first answer sampled is not always the one on the left

    # Descriptions are short for the footer; tooltips name the command in the command palette.
    BINDINGS = [
        Binding("ctrl+s", "sample", "Sample", tooltip="Sample two answers to the prompt"),
        *PICK_BINDINGS,
        Binding("t", "tie", "Tie", tooltip="Tie: record it, save no pair"),
        Binding("g", "mark(True)", "Good", tooltip="Answer 1 alone is good: save it for KTO"),
        Binding("b", "mark(False)", "Bad", tooltip="Answer 1 alone is bad: save it for KTO"),
        Binding("e", "edit", "Edit", tooltip="Edit the answers before picking"),
        Binding("r", "resample", "Resample", tooltip="Resample both answers"),
        Binding("u", "undo", "Undo", tooltip="Undo the last label"),
        Binding("n", "next", "Next", tooltip="Next prompt (from the queue, or a new one)"),
        Binding("o", "open_queue", "Queue", tooltip="Open a prompt queue file"),
        Binding("s", "settings", "Settings", tooltip="Sampling settings"),
        Binding("a", "accept", "Accept", show=False, tooltip="Accept the judge's suggestion"),
        Binding("m", "rating_mode", "Rate", tooltip="Rating mode: rate 2-6 answers 1-5 or good/bad (GRPO groups)"),
        *EDITOR_BINDINGS,
        *CONVERSATION_BINDINGS,
    ]

    def __init__(self) -> None:
        super().__init__(id="label-screen")
        self.settings = SampleSettings()
        self.history = LabelHistory()
        self.queue = PromptQueue()
        self.context: tuple[dict, ...] = ()  # earlier turns of a queued multi-turn prompt
        self.conversation = Conversation()  # the labelled turns a continued conversation goes on from
        self.candidate: KeptCandidate  # set on mount: it needs the app's store
        self.sampled_version: str | None = None  # the version that sampled the shown answers, if known
        self.suggestion = None  # the judge's Suggestion for the shown answers

    # --- layout ---

    def compose(self) -> ComposeResult:
        yield ModeBar("label")
        with Horizontal(id="label-status-row"):
            yield ModelStatus(id="model-status")
            yield Static("", id="suggestion")
            yield Static("", id="queue-status")
        with Vertical(id="prompt-box"):
            yield ConversationView(id="thread")
            yield from prompt_fields("system", "prompt", "Type a prompt, then ctrl+s to sample two answers")
            with Horizontal(id="prompt-buttons"):
                yield ScreenButton("ctrl+s sample", "sample", id="sample", variant="primary")
                yield ScreenButton("s settings", "settings", id="settings")
                yield ScreenButton("o open queue", "open_queue", id="open-queue")
        with Horizontal(id="answers"):
            yield AnswerPane(1, id="answer-1")
            yield AnswerPane(2, id="answer-2")
        yield RatingPanel(id="ratings")  # the rating mode's answers (ratings.py), shown in place of the two panes
        with Horizontal(id="label-buttons"):
            yield ScreenButton("1 better", "pick(1)", id="pick-1", variant="success")
            yield ScreenButton("2 better", "pick(2)", id="pick-2", variant="success")
            yield ScreenButton("t tie", "tie", id="tie")
            if self.app.judge is not None:
                yield ScreenButton("a accept", "accept", id="accept")
            yield ScreenButton("e edit", "edit", id="edit")
            yield ScreenButton("r resample", "resample", id="resample")
            yield ScreenButton("u undo", "undo", id="undo")
            yield ScreenButton("n next", "next", id="next")
        yield StatusLine(id="label-status")
        yield Footer()

    def on_mount(self) -> None:
        self.settings = self.app.initial_settings
        self.candidate = KeptCandidate(self.app.store)
        self._show_settings()
        self._show_queue()
        self.query_one("#prompt", TextArea).focus()
        self.query_one("#suggestion", Static).display = False
        self.call_after_refresh(self.app.first_screen_drawn)
        self._restore_unjudged()
        online.open_initial_queue(self)

    # --- small helpers ---

    @property
    def labeled(self) -> str | None:
        """ "pair #3" or "tie" once the shown answers are labeled."""
        return self.sampling.judged

    @property
    def sampler(self) -> str | None:
        """Who sampled the shown answers: the current model, or the one named by restored answers."""
        return self.sampling.sources[0] or self.app.sampler

    @property
    def store(self):
        return self.app.store

    def _editor_parts(self) -> PromptParts:
        return read_prompt(self, "system", "prompt", self.context)

    def _set_editor(self, parts: PromptParts) -> None:
        self.context = parts.context
        self.query_one("#system", Input).value = parts.system
        prompt = self.query_one("#prompt", TextArea)
        prompt.text = parts.user
        turns = len(parts.context)
        prompt.border_title = f"prompt (after {turns} earlier turn{'s' * (turns != 1)})" if turns else "prompt"

    def _show_settings(self) -> None:
        self.query_one("#prompt", TextArea).border_subtitle = self.settings.summary()

    def _show_queue(self) -> None:
        self.query_one("#queue-status", Static).update(Text(self.queue.status()))

    def _focus_answers(self) -> None:
        self.pane(1).focus()

    def _clear_answers(self) -> None:
        """No answers on screen, and any request in flight cancelled. Unjudged answers are replaced or
        skipped here, so the kept copy goes too: a restart should not bring them back."""
        self.candidate.drop()
        self.app.worker.cancel()
        self.sampling.clear()
        online.forget(self)
        for slot in SLOTS:
            self.pane(slot).set_text("")
            self.pane(slot).set_title()

    def _show_answers(self, parts: PromptParts, answers: tuple[str, str], sampler: str | None) -> None:
        """Complete answers to `parts` on screen, ready to be judged (restored from the store, or undone)."""
        self.app.worker.cancel()
        self._set_editor(parts)
        self.sampling.restore(parts, answers, (sampler, sampler))
        self.sampled_version = None
        for slot, text in zip(SLOTS, answers):
            self.pane(slot).set_title()
            self.pane(slot).set_text(text, _done("restored", text))
        online.ask(self)

    def _restore_unjudged(self) -> None:
        """Answers sampled in an earlier session and never judged come back on screen."""
        kept = self.candidate.restore()
        if kept is None:
            return
        self._show_answers(PromptParts.from_messages(kept.prompt), two(kept.answers), kept.sampler)
        self.show_status("answers from the last session, not judged yet: 1 / 2 pick · t tie · r resample", "warning")
        self._focus_answers()

    def _keep_candidate(self) -> None:
        """Both answers are in: keep them in the store so quitting before a judgement loses nothing."""
        error = self.candidate.keep(self.sampling.prompt.messages(), self.answers(), self.sampler)
        if error is not None:
            self.app.notify_warning(f"Could not keep the answers for a later session: {error}")

    # --- sampling ---

    def action_sample(self) -> None:
        parts = self._editor_parts()
        if parts.empty:
            self.app.notify_error(
                "The prompt is empty: type a prompt first, then press ctrl+s.", title="Nothing to sample"
            )
            self.query_one("#prompt", TextArea).focus()
            return
        if self.refuse_without_model():
            return
        if ratings.active(self):  # the rating mode samples 2-6 answers (ratings.py)
            return ratings.sample(self, parts)
        self._start_sampling(parts, self.settings)

    def _start_sampling(self, parts: PromptParts, settings: SampleSettings) -> None:
        self._clear_answers()
        self.sampling.start(self.app.worker.sample(parts.messages(), settings), parts)
        self.sampled_version = online.known_version(self.app.current_version_label())
        waiting = "sampling…" if self.app.model_state == "ready" else "waiting for the model to load…"
        for slot in SLOTS:
            self.pane(slot).set_text("", waiting if slot == 1 else "queued")
        self.show_status("")
        self._focus_answers()

    def action_resample(self) -> None:
        if self.settings.seed is not None and self.sampling.state not in ("idle", "failed"):
            # A fixed seed would give the same two answers again: move on to the next pair of seeds.
            self.settings = self.settings.with_seed(self.settings.seed + 2)
            self._show_settings()
        self.action_sample()

    # The newest request's events (TwoAnswersScreen drops those of older requests).

    def show_started(self, seeds: tuple[int, int]) -> None:
        for slot, seed in zip(SLOTS, seeds):
            self.pane(slot).set_title(f"seed {seed}")
        self._show_streaming()

    def show_chunk(self, slot: int, text: str) -> None:
        self.pane(slot).append(text)
        self._show_streaming()

    def _show_streaming(self) -> None:
        """The worker answers slot 1, then slot 2: the pane it is writing says so."""
        slot = self.sampling.streaming_slot
        if slot is not None:
            self.pane(slot).border_subtitle = "streaming…"

    def show_failed(self, error: str) -> None:
        self.app.notify_error(f"Sampling failed: {error}")
        self.show_status("sampling failed", "error")

    def show_done(self, slot: int, text: str) -> None:
        self.pane(slot).set_text(text, _done("done" if text.strip() else "done (empty answer)", text))
        self._show_streaming()
        if self.sampling.state == "ready":
            self._keep_candidate()
            hint = "1 / 2 pick the better answer · t tie · e edit · r resample"
            if self.sampling.identical:
                hint = "the two answers are identical: r resample · e edit · t tie"
            self.show_status(hint)
            online.ask(self)

    # --- labels ---

    def _can_label(self) -> bool:
        state = self.state
        if state in ("idle", "failed"):
            self.app.notify_warning("Nothing to label yet: type a prompt and press ctrl+s to sample two answers.")
        elif state == "sampling":
            self.app.notify_warning("Wait until both answers are complete (or press r to resample).")
        elif state == "labeled":
            self.app.notify_warning(f"Already labeled ({self.labeled}): press r to resample or n for the next prompt.")
        return state == "ready"

    def action_pick(self, slot: int) -> None:
        self.save_pick(slot)

    def save_pick(self, slot: int, note: str | None = None) -> None:
        """Save the pair with the answer in pane `slot` chosen, with the order it was shown in."""
        if not self._can_label():
            return
        if self.sampling.identical:
            self.app.notify_error(
                "The two answers are identical, so they cannot form a pair. "
                "Press r to resample, e to edit one of them, or t to record a tie.",
                title="Not saved",
            )
            return
        chosen, rejected = self.sampling.chosen_rejected(slot)
        notes = ["answers edited before labeling"] * self.sampling.edited + [note] * (note is not None)
        parent = self.continues(self.sampling.prompt.messages())
        try:
            pair = self.store.add_pair(
                self.sampling.prompt.messages(),
                chosen,
                rejected,
                origin="sampled",
                sampler=self.sampler,
                note="; ".join(notes) or None,
                candidate_id=self.candidate.id,
                judge=None,
                version=self.sampled_version,
                shown_first=self.sampling.shown_first(slot),
                continues=parent,
            )
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Not saved")
            return
        self._labeled(
            LabelRecord("pair", pair.id, self.sampling.prompt, self.answers(), self.queue.pos),
            f"saved pair #{pair.id} (answer {slot} chosen)",
            f"saved pair #{pair.id}",
            title="Saved",
        )
        self.conversation_labeled(pair, parent)

    def action_mark(self, desirable: bool) -> None:
        mark_answer(self, desirable)

    def action_tie(self) -> None:
        if not self._can_label():
            return
        try:
            skip = self.store.add_skip(
                self.sampling.prompt.messages(),
                "tie",
                answers=list(self.answers()),
                sampler=self.sampler,
                candidate_id=self.candidate.id,
                version=self.sampled_version,
            )  # the answers in the order shown
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Not saved")
            return
        self._labeled(
            LabelRecord("skip", skip.id, self.sampling.prompt, self.answers(), self.queue.pos),
            "tie recorded: no pair saved",
            "tie recorded (no pair saved)",
        )

    def _labeled(self, record: LabelRecord, status: str, notice: str, title: str = "") -> None:
        """The store has committed the label (and deleted the kept candidate with it): only now is it
        reported as saved, and a queue moves on."""
        self.candidate.judged()
        self.sampling.judge(f"pair #{record.id}" if record.kind == "pair" else "tie")
        online.forget(self)
        self.history.add(record)
        self.show_status(status, "saved")
        self.app.notify(notice, title=title, timeout=2)
        self.app.store_changed()
        self._advance_queue()
        if record.kind == "pair":
            self.app.labeled()

    def action_edit(self) -> None:
        if not self._can_label():
            return
        first, second = self.answers()
        self.app.push_screen(EditAnswersModal(first, second), self._edited)

    def _edited(self, result: EditedAnswers | None) -> None:
        self._focus_answers()
        if result is None:
            return
        if self.sampling.edit(result.answers):
            for slot, text in zip(SLOTS, result.answers):
                self.pane(slot).set_text(text, "edited")
            self._keep_candidate()  # a quit now brings back the edited answers
        if result.pick is not None:
            self.action_pick(result.pick)
        else:
            self.show_status("answers edited: 1 / 2 pick the better answer")

    def action_undo(self) -> None:
        try:
            result = self.store.undo_last_label()
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Undo failed")
            return
        if result is None:
            self.app.notify_warning("Nothing to undo.")
            return
        undone = self.history.undone(result)
        if result.kind == "pair":
            self.conversation_undone(result.pair.id)
        if undone.queue_pos is not None and self.queue:
            self.queue.pos = undone.queue_pos
            self._show_queue()
        self._show_answers(undone.parts, undone.answers, undone.sampler)
        self._keep_candidate()  # unjudged again, so kept like freshly sampled answers
        self.show_status(f"undid {undone.what}: label it again", "warning")
        self.app.notify(f"undid {undone.what}", timeout=2)
        self.app.store_changed()
        self._focus_answers()

    def action_rating_mode(self) -> None:  # the rating mode (ratings.py)
        ratings.toggle(self)

    def on_worker_event(self, message) -> None:
        if not ratings.take(self, message):  # a rating mode's answers are drawn there; the pair mode's below
            super().on_worker_event(message)

    def on_rating_panel_save(self, _message: RatingPanel.Save) -> None:
        ratings.save(self)

    # --- a program judge's suggestion (online.py) ---

    def show_other(self, event) -> None:
        if isinstance(event, Suggestion):
            online.received(self, event)

    def judge_ready(self) -> None:
        """The judge has loaded (or failed to): answers already on screen get their suggestion now."""
        online.ask(self)

    def action_accept(self) -> None:
        online.accept(self)

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


def _done(subtitle: str, answer: str) -> str:
    """A pane's subtitle for a complete answer: says so when it was cut at max tokens (the model did not end it)."""
    return subtitle if is_finished(answer) else f"{subtitle} · unfinished: cut at max tokens"
