"""The Label screen's plain helpers, driven without a terminal: the prompt queue, the kept candidate, undo."""

from __future__ import annotations

import pytest

from mlx_dpo.data.store import PreferenceStore
from tui.prompts import PromptParts, PromptQueue, QueueError
from tui.screens.label.candidates import KeptCandidate
from tui.screens.label.history import LabelHistory, LabelRecord, two

PROMPT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "ws") as store:
        yield store


# --- the prompt queue ---


def test_a_queue_walks_its_prompts_and_says_where_it_is(tmp_path):
    (tmp_path / "q.txt").write_text("first\nsecond\n")
    queue = PromptQueue.open(tmp_path / "q.txt")
    assert len(queue) == 2 and queue.name == "q.txt" and queue.status() == "queue q.txt 0/2"
    assert queue.next_index == 0 and not queue.finished
    assert queue.show(0) == PromptParts("", "first") and queue.status() == "queue q.txt 1/2"
    assert queue.next_index == 1 and not queue.finished
    assert queue.show(1).user == "second" and queue.next_index is None and queue.finished


def test_no_queue_has_nothing_next():
    queue = PromptQueue()
    assert not queue and queue.next_index is None and not queue.finished
    assert queue.status() == "no queue · o to open one"


def test_a_bad_queue_file_is_refused_with_its_name(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(QueueError, match="empty.txt"):
        PromptQueue.open(tmp_path / "empty.txt")


# --- answers kept until judged ---


def test_kept_answers_replace_each_other_and_drop_removes_them(store):
    kept = KeptCandidate(store)
    assert kept.keep(PROMPT, ("Blue.", "Red."), "tiny") is None
    first = kept.id
    assert kept.keep(PROMPT, ("Green.", "Red."), "tiny") is None  # new answers: the old ones go
    assert [c.answers for c in store.list_candidates()] == [["Green.", "Red."]] and kept.id != first
    kept.drop()
    assert kept.id is None and store.list_candidates() == []
    kept.drop()  # nothing kept: nothing to do


def test_restore_brings_back_the_newest_and_forgets_leftovers(store):
    store.add_candidate(PROMPT, ["old", "older"])
    newest = store.add_candidate(PROMPT, ["Blue.", "Red."], sampler="tiny")
    kept = KeptCandidate(store)
    restored = kept.restore()
    assert restored.id == newest.id == kept.id and restored.sampler == "tiny"
    assert [c.id for c in store.list_candidates()] == [newest.id]
    assert KeptCandidate(store).restore().id == newest.id  # still kept until judged


def test_a_label_takes_the_kept_candidate_with_it(store):
    kept = KeptCandidate(store)
    kept.keep(PROMPT, ("Blue.", "Red."), None)
    store.add_pair(PROMPT, "Blue.", "Red.", origin="sampled", candidate_id=kept.id)
    kept.judged()
    assert kept.id is None and store.list_candidates() == []


def test_a_refused_candidate_returns_the_error(store):
    error = KeptCandidate(store).keep([], ("Blue.", "Red."), None)  # no prompt: the store says no
    assert error and store.list_candidates() == []


# --- undo ---


def test_undo_of_a_label_of_this_session_gives_back_the_editor_and_queue_position(store):
    history = LabelHistory()
    parts = PromptParts("Be brief.", "Name a colour.")
    pair = store.add_pair(parts.messages(), "Blue.", "Red.", origin="sampled", sampler="tiny")
    history.add(LabelRecord("pair", pair.id, parts, ("Red.", "Blue."), queue_pos=2))  # answer 2 was chosen
    undone = history.undone(store.undo_last_label())
    assert undone.what == f"pair #{pair.id}" and undone.parts == parts
    assert undone.answers == ("Red.", "Blue.") and undone.queue_pos == 2 and undone.sampler == "tiny"
    assert history.records == []


def test_undo_of_a_label_of_an_earlier_session_is_rebuilt_from_the_store(store):
    pair = store.add_pair(PROMPT, "Blue.", "Red.", origin="sampled")
    undone = LabelHistory().undone(store.undo_last_label())
    assert undone.parts == PromptParts.from_messages(PROMPT) and undone.answers == ("Blue.", "Red.")
    assert undone.queue_pos is None and undone.what == f"pair #{pair.id}"
    store.add_skip(PROMPT, "tie", answers=["only one"])
    undone = LabelHistory().undone(store.undo_last_label())
    assert undone.what == "tie" and undone.answers == ("only one", "")


def test_two_pads_or_cuts_stored_answers():
    assert two([]) == ("", "") and two(["a"]) == ("a", "") and two(["a", "b", "c"]) == ("a", "b")
