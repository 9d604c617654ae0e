"""The sampling state the Label and Compare screens share, driven without a terminal or a model."""

from __future__ import annotations

import pytest

from tui.prompts import PromptParts
from tui.sampling import SamplingState
from tui.workers.events import AnswerChunk, AnswerDone, LoadProgress, SampleFailed, SampleStarted

PROMPT = PromptParts("", "Name a colour.")


def streamed(state: SamplingState, request_id: int, first: str = "Blue.", second: str = "Red.") -> None:
    """The worker's events for one complete request, as it sends them: slot 1, then slot 2."""
    events = [SampleStarted(request_id, (7, 8))]
    for slot, text in ((1, first), (2, second)):
        events += [
            AnswerChunk(request_id, slot, text[:2]),
            AnswerChunk(request_id, slot, text[2:]),
            AnswerDone(request_id, slot, text),
        ]
    for event in events:
        assert state.apply(event)


def test_a_new_state_is_idle_with_no_answers():
    state = SamplingState()
    assert state.state == "idle" and state.answers == ("", "") and state.request_id is None
    assert state.streaming_slot is None


def test_answers_stream_in_slot_by_slot_until_both_are_ready():
    state = SamplingState()
    state.start(1, PROMPT, sources=("base", "v1"))
    assert state.state == "sampling" and state.prompt == PROMPT and state.sources == ("base", "v1")
    assert state.streaming_slot == 1
    assert state.apply(SampleStarted(1, (7, 8))) and state.seeds == (7, 8)
    assert state.apply(AnswerChunk(1, 1, "Bl")) and state.apply(AnswerChunk(1, 1, "ue"))
    assert state.answers == ("Blue", "") and state.state == "sampling"
    assert state.apply(AnswerDone(1, 1, "Blue.")) and state.answers == ("Blue.", "")  # the whole answer wins
    assert state.streaming_slot == 2
    assert state.apply(AnswerChunk(1, 2, "Red")) and state.apply(AnswerDone(1, 2, "Red."))
    assert state.state == "ready" and state.answers == ("Blue.", "Red.") and state.streaming_slot is None
    assert state.chosen_rejected(1) == ("Blue.", "Red.") and state.chosen_rejected(2) == ("Red.", "Blue.")


def test_events_of_an_older_request_change_nothing():
    state = SamplingState()
    state.start(1, PROMPT)
    state.apply(AnswerChunk(1, 1, "old "))
    state.start(2, PROMPT)  # a resample: request 2 replaces request 1
    assert state.answers == ("", "") and state.request_id == 2
    for stale in (
        SampleStarted(1, (1, 2)),
        AnswerChunk(1, 1, "still flushing"),
        AnswerDone(1, 1, "old answer"),
        AnswerDone(1, 2, "old answer"),
        SampleFailed(1, "cancelled"),
    ):
        assert not state.apply(stale)
    assert state.state == "sampling" and state.answers == ("", "") and state.seeds is None
    streamed(state, 2)
    assert state.state == "ready" and state.answers == ("Blue.", "Red.")


def test_no_event_counts_before_a_request_or_after_clear():
    state = SamplingState()
    assert not state.apply(AnswerChunk(1, 1, "x"))
    state.start(3, PROMPT)
    state.clear()
    assert not state.apply(AnswerDone(3, 1, "x")) and state.state == "idle"


def test_a_failed_request_is_failed_until_the_next_one():
    state = SamplingState()
    state.start(1, PROMPT)
    assert state.apply(SampleFailed(1, "the model could not be loaded"))
    assert state.state == "failed" and state.error == "the model could not be loaded"
    state.start(2, PROMPT)
    assert state.state == "sampling" and state.error is None


def test_judged_answers_stay_judged_and_a_new_request_forgets_it():
    state = SamplingState()
    state.start(1, PROMPT)
    streamed(state, 1)
    state.judge("pair #3")
    assert state.state == "judged" and state.judged == "pair #3"
    state.start(2, PROMPT)
    assert state.state == "sampling" and state.judged is None


def test_restored_answers_are_ready_and_name_who_sampled_them():
    state = SamplingState()
    state.restore(PROMPT, ("Blue.", "Red."), ("tiny-model", "tiny-model"))
    assert state.state == "ready" and state.answers == ("Blue.", "Red.")
    assert state.sources == ("tiny-model", "tiny-model") and state.request_id is None
    assert not state.apply(AnswerChunk(1, 1, "x"))  # no request is in flight for restored answers


def test_edits_replace_the_answers_and_are_remembered():
    state = SamplingState()
    state.restore(PROMPT, ("Blue.", "Red."))
    assert not state.edit(("Blue.", "Red.")) and not state.edited  # unchanged: not an edit
    assert state.edit(("Light blue.", "Red.")) and state.edited and state.answers == ("Light blue.", "Red.")
    state.restore(PROMPT, ("a", "b"))
    assert not state.edited


def test_identical_answers_follow_the_pair_rule():
    state = SamplingState()
    state.restore(PROMPT, ("Paris.", "  Paris.\n"))
    assert state.identical  # surrounding whitespace does not count, as in mlx_dpo.data.pairs
    state.edit(("Paris.", "Lyon."))
    assert not state.identical


def test_other_events_are_refused():
    with pytest.raises(TypeError, match="LoadProgress"):
        SamplingState().apply(LoadProgress(0, 2, "loading"))
