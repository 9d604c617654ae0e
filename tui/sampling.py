"""One sampling request as the Label and Compare screens follow it: plain Python, no Textual, no model.

A screen asks the model worker for two answers (`ModelWorker.sample` or `.compare`), hands the request
id to `start`, and feeds every sampling event (`SampleStarted`, `AnswerChunk`, `AnswerDone`,
`SampleFailed`) to `apply` (or to the method of the same meaning). Only the newest request counts: an
older one may still be flushing after a resample, and its events return False, so the screen redraws
nothing for them. The screens draw what this holds; the rules (which request is current, when both
answers are in, what a judged or failed request may do next) live here once, and the tests drive them
without a terminal.

Slots and panes. The worker answers its slot 1 (seed s), then its slot 2 (seed s + 1); the screen shows
them in panes 1 and 2 ("A" and "B"). With `shuffle=True` (the Label screen) the pane order is drawn per
request, from the request's seeds (`shown_order`), so a person's habit of preferring the left answer is
not tied to the first sample, and the same seeds always show the same order. Everything here is kept by
pane: `answers`, `chosen_rejected(pane)`, `streaming_slot` (a pane); only the events speak of the
worker's slots, and `pane_of` turns one into the other.
"""

from __future__ import annotations

import random

from mlx_dpo.api import Answer, same_answers
from tui.prompts import PromptParts
from tui.workers import events

SLOTS = (1, 2)
# Who produced an answer: a sampler name (Label) or a version label (Compare); None means "the model the
# app samples from right now", resolved when the pair is saved (the model may still be loading at `start`).
Source = str | None


def shown_order(seeds: tuple[int, int]) -> tuple[int, int]:
    """The worker slots shown in panes 1 and 2 for a request with these seeds: (1, 2) or (2, 1), each for
    about half of all seeds. Drawn from the seeds, so a fixed seed shows the same screen every time."""
    return (2, 1) if random.Random(seeds[0]).random() < 0.5 else (1, 2)


class SamplingState:
    """Two answers to one prompt: being streamed, complete (ready to judge), judged, or failed."""

    def __init__(self, *, shuffle: bool = False) -> None:
        self.shuffle = shuffle  # draw the pane order of each request (Label); else slot i in pane i (Compare)
        self.clear()

    def clear(self) -> None:
        """No prompt and no answers: the state after a new, empty prompt."""
        self.request_id: int | None = None
        self.prompt: PromptParts | None = None  # the prompt the answers answer
        self.texts: list[str] = ["", ""]
        self.done: list[bool] = [False, False]
        self.seeds: tuple[int, int] | None = None  # by the worker's slot
        self.order: tuple[int, int] = (1, 2)  # the worker slot shown in pane 1, and in pane 2
        self.error: str | None = None
        self.sources: tuple[Source, Source] = (None, None)
        self.edited = False  # the answers were changed by hand after sampling
        self.judged: str | None = None  # what was saved for them: "pair #3", "tie", ...

    # --- starting ---

    def start(self, request_id: int, prompt: PromptParts, sources: tuple[Source, Source] = (None, None)) -> None:
        """A new request replaces whatever was there."""
        self.clear()
        self.request_id, self.prompt, self.sources = request_id, prompt, sources

    def restore(
        self, prompt: PromptParts, answers: tuple[str, str], sources: tuple[Source, Source] = (None, None)
    ) -> None:
        """Complete answers that were not sampled just now (kept in the store, or brought back by undo)."""
        self.clear()
        self.prompt, self.sources = prompt, sources
        self.texts, self.done = list(answers), [True, True]

    # --- the worker's events; each returns False when it belongs to an older request ---

    def is_current(self, request_id: int) -> bool:
        return self.request_id is not None and request_id == self.request_id

    def started(self, request_id: int, seeds: tuple[int, int]) -> bool:
        if not self.is_current(request_id):
            return False
        self.seeds = tuple(seeds)
        if self.shuffle:  # before any answer arrives: the worker sends SampleStarted first
            self.order = shown_order(self.seeds)
        return True

    def pane_of(self, slot: int) -> int:
        """The pane (1 or 2) that shows the worker's slot `slot`."""
        return self.order.index(slot) + 1

    def chunk(self, request_id: int, slot: int, text: str) -> bool:
        if not self.is_current(request_id):
            return False
        self.texts[self.pane_of(slot) - 1] += text
        return True

    def finish(self, request_id: int, slot: int, text: str, finished: bool = True) -> bool:
        """Slot `slot`'s whole answer (it replaces the chunks streamed so far); `finished` False: cut at max tokens.
        The answer is kept as an Answer (mlx_dpo.data.answers), so a pair or tie saved from it keeps the flag."""
        if not self.is_current(request_id):
            return False
        pane = self.pane_of(slot)
        self.texts[pane - 1] = Answer(text, finished)
        self.done[pane - 1] = True
        return True

    def fail(self, request_id: int, error: str) -> bool:
        if not self.is_current(request_id):
            return False
        self.error = error
        return True

    def apply(self, event: events.SampleEvent) -> bool:
        """Any one of the worker's sampling events; True when it changed this (newest) request."""
        if isinstance(event, events.SampleStarted):
            return self.started(event.request_id, event.seeds)
        if isinstance(event, events.AnswerChunk):
            return self.chunk(event.request_id, event.slot, event.text)
        if isinstance(event, events.AnswerDone):
            return self.finish(event.request_id, event.slot, event.text, event.finished)
        if isinstance(event, events.SampleFailed):
            return self.fail(event.request_id, event.error)
        raise TypeError(f"not a sampling event: {type(event).__name__}")

    # --- after the answers are in ---

    def edit(self, answers: tuple[str, str]) -> bool:
        """Answers changed by hand; True if they differ from the shown ones."""
        if tuple(answers) == self.answers:
            return False
        self.texts, self.edited = list(answers), True
        return True

    def judge(self, what: str) -> None:
        """The answers were saved (a pair, a tie...): they cannot be judged again."""
        self.judged = what

    # --- reading ---

    @property
    def state(self) -> str:
        """idle (no prompt), sampling, ready (both answers, not judged yet), judged, or failed."""
        if self.prompt is None:
            return "idle"
        if self.error is not None:
            return "failed"
        if self.judged:
            return "judged"
        return "ready" if all(self.done) else "sampling"

    @property
    def answers(self) -> tuple[str, str]:
        return self.texts[0], self.texts[1]

    @property
    def identical(self) -> bool:
        """The two answers count as the same (the pair rules' `same_answers`): they cannot form a pair."""
        return same_answers(*self.answers)

    @property
    def pane_seeds(self) -> tuple[int, int] | None:
        """The seeds of the answers in pane 1 and pane 2."""
        if self.seeds is None:
            return None
        return self.seeds[self.order[0] - 1], self.seeds[self.order[1] - 1]

    @property
    def streaming_slot(self) -> int | None:
        """The pane the worker is answering now (it answers its slot 1, then slot 2), or None."""
        if self.state != "sampling":
            return None
        return next(self.pane_of(slot) for slot in SLOTS if not self.done[self.pane_of(slot) - 1])

    def chosen_rejected(self, slot: int) -> tuple[str, str]:
        """The answers as a pair when the answer in pane `slot` (1 or 2) is the better one."""
        return self.texts[slot - 1], self.texts[2 - slot]

    @staticmethod
    def shown_first(slot: int) -> str:
        """What the store records as shown first (in pane 1) when pane `slot` holds the chosen answer."""
        return "chosen" if slot == 1 else "rejected"
