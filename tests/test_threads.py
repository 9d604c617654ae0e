"""Conversations in the store: each turn's pair points to the turn it continues (mlx_dpo.data.thread_records), and
an exported store imported elsewhere comes back as the same threads."""

from __future__ import annotations

import json

import pytest
from helpers import assistant, system, thread_shapes, user, write_jsonl

from mlx_dpo.data.pairs import load_pairs
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.data.thread_records import turn_depth
from mlx_dpo.errors import MlxDpoError


@pytest.fixture
def store(workspace):
    with PreferenceStore(workspace) as s:
        yield s


def label_conversation(store) -> list:
    """Three turns, then a branch from the first: four pairs, each prompt the whole conversation so far."""
    sys_ = [system("Be brief.")]
    t1 = store.add_pair(sys_ + [user("Name a colour.")], "Blue.", "Colours are many.")
    t2 = store.add_pair(
        t1.prompt + [assistant("Blue."), user("Why that one?")], "The sky.", "No reason.", continues=t1.id
    )
    t3 = store.add_pair(
        t2.prompt + [assistant("The sky."), user("And at night?")], "Black.", "Still blue.", continues=t2.id
    )
    branch = store.add_pair(
        t1.prompt + [assistant("Blue."), user("Another one?")], "Red.", "Blue again.", continues=t1.id
    )
    return [t1, t2, t3, branch]


def test_each_turn_points_to_the_turn_it_continues_and_branches_share_their_history(store):
    t1, t2, t3, branch = label_conversation(store)
    assert [turn_depth(p.prompt) for p in (t1, t2, t3, branch)] == [1, 2, 3, 2]
    assert store.threads.links() == {t2.id: t1.id, t3.id: t2.id, branch.id: t1.id}
    assert [p.id for p in store.threads.path(t3.id)] == [t1.id, t2.id, t3.id]
    (root,) = store.threads.trees()
    assert root.pair.id == t1.id and [c.pair.id for c in root.children] == [t2.id, branch.id]
    assert [n.pair.id for n in root.walk()] == [t1.id, t2.id, t3.id, branch.id]
    assert [n.depth for n in root.walk()] == [1, 2, 3, 2]


def test_a_pair_that_does_not_continue_its_parent_is_refused_and_nothing_is_saved(store):
    t1 = store.add_pair([user("Name a colour.")], "Blue.", "Colours are many.")
    with pytest.raises(MlxDpoError, match=f"does not continue pair {t1.id}"):
        store.add_pair([user("Something else"), assistant("Blue."), user("Why?")], "A.", "B.", continues=t1.id)
    with pytest.raises(MlxDpoError, match="no stored pair with id 99"):
        store.add_pair(t1.prompt + [assistant("Blue."), user("Why?")], "A.", "B.", continues=99)
    assert store.count_pairs() == 1 and store.threads.links() == {}


def test_undoing_a_turn_removes_its_link_and_deleting_a_turn_leaves_the_later_ones_as_their_own_threads(store):
    t1, t2, t3, branch = label_conversation(store)
    assert store.undo_last_label().pair.id == branch.id
    assert store.threads.links() == {t2.id: t1.id, t3.id: t2.id}
    store.delete_pair(t2.id)
    assert store.threads.links() == {} and store.threads.trees() == []
    assert store.get_pair(t3.id).prompt[-1] == user("And at night?")  # its prompt still holds the history


def test_export_writes_trl_conversational_rows_and_import_reads_them_back_into_the_same_threads(store, tmp_path):
    label_conversation(store)
    store.add_pair([user("Unrelated?")], "Yes.", "No.")  # a single question is no thread
    out = tmp_path / "out.jsonl"
    assert store.export_jsonl(out) == 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["prompt"]) for r in rows] == [2, 4, 6, 4, 1]  # the prompt is the message list so far
    assert all(r["chosen"][0]["role"] == "assistant" and len(r["chosen"]) == 1 for r in rows)
    # Imported in the reverse order: a later turn may arrive before the turn it continues.
    reversed_file = write_jsonl(tmp_path / "reversed.jsonl", *reversed(rows))
    with PreferenceStore(tmp_path / "other") as other:
        result = other.import_jsonl(reversed_file)
        assert (result.added, result.linked) == (5, 3)
        assert thread_shapes(other) == thread_shapes(store)
        assert load_pairs(out).pairs == other.training_pairs()[::-1]  # the same rows, ids kept


def test_import_links_a_turn_to_the_pair_whose_chosen_answer_it_went_on_from(store, tmp_path):
    first = [user("Q1")]
    rows = [
        {"id": "a", "prompt": first, "chosen": [assistant("A1")], "rejected": [assistant("B1")]},
        {"id": "b", "prompt": first, "chosen": [assistant("C1")], "rejected": [assistant("A1")]},
        {"id": "c", "prompt": first + [assistant("C1"), user("Q2")], "chosen": "x", "rejected": "y"},
        {"id": "d", "prompt": first + [assistant("Z1"), user("Q2")], "chosen": "x", "rejected": "y"},
    ]
    store.import_jsonl(write_jsonl(tmp_path / "in.jsonl", *rows))
    ids = {p.external_id: p.id for p in store.list_pairs()}
    # c went on from b's chosen answer; d from an answer no pair chose: the oldest pair of that prompt.
    assert store.threads.links() == {ids["c"]: ids["b"], ids["d"]: ids["a"]}


def test_a_turn_imported_before_the_turn_it_continues_is_linked_when_that_one_arrives(store, tmp_path):
    later = {"prompt": [user("Q1"), assistant("A1"), user("Q2")], "chosen": "x", "rejected": "y"}
    earlier = {"prompt": [user("Q1")], "chosen": "A1", "rejected": "B1"}
    assert store.import_jsonl(write_jsonl(tmp_path / "later.jsonl", later)).linked == 0
    assert store.import_jsonl(write_jsonl(tmp_path / "earlier.jsonl", earlier)).linked == 1
    assert len(store.threads.links()) == 1


def test_the_turn_a_new_prompt_would_continue_is_found_by_its_history(store):
    t1, t2, _, _ = label_conversation(store)
    assert store.threads.parent_of(t2.prompt + [assistant("The sky."), user("Really?")]) == t2.id
    assert store.threads.parent_of(t1.prompt + [assistant("Green."), user("Why?")]) == t1.id  # another answer
    assert store.threads.parent_of([user("Name a colour.")]) is None
