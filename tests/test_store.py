"""Specification of the preference store: one SQLite file per workspace holding pairs, ties/skips, sampled
candidates and the labeling history, durable the moment a call returns."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import assistant, system, user, write_jsonl

import mlx_dpo.data.pair_records as pair_records
import mlx_dpo.data.schema as schema_module
from mlx_dpo.data.pairs import PreferencePair, load_pairs
from mlx_dpo.data.schema import SCHEMA_VERSION
from mlx_dpo.data.store import (
    Candidate,
    ImportResult,
    PreferenceStore,
    Skip,
    StoredPair,
    UndoResult,
)
from mlx_dpo.errors import MlxDpoError


class Clock:
    """A fake clock: each reading is one second after the previous one, so "newest" is never a tie."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def store(workspace):
    with PreferenceStore(workspace, clock=Clock()) as s:
        yield s


STANDARD_ROWS = [
    {"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "Numbers are tricky."},
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon, probably."},
]


def conversational(row: dict) -> dict:
    return {
        "prompt": [user(row["prompt"])],
        "chosen": [assistant(row["chosen"])],
        "rejected": [assistant(row["rejected"])],
    }


# --- opening ----------------------------------------------------------------------------------------------


def test_opening_a_new_workspace_creates_the_folder_and_a_wal_database(tmp_path):
    workspace = tmp_path / "deep" / "ws"
    with PreferenceStore(workspace) as s:
        assert s.workspace == workspace
        assert s.path == workspace / "preferences.sqlite"
        assert s.path.is_file()
        assert s.stats()["journal_mode"] == "wal"
        assert s.stats()["schema_version"] == SCHEMA_VERSION
        assert s.db._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: the WAL is fsynced at each commit
    with sqlite3.connect(workspace / "preferences.sqlite") as raw:
        assert raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_the_default_workspace_is_mlx_dpo_workspace_in_the_current_folder():
    assert PreferenceStore.default_workspace() == Path("mlx-dpo-workspace")


def test_a_workspace_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "ws").write_text("not a folder")
    with pytest.raises(MlxDpoError, match="is a file; the workspace must be a folder"):
        PreferenceStore(tmp_path / "ws")


def test_a_store_file_that_is_not_a_database_is_refused_and_left_untouched(workspace):
    workspace.mkdir()
    junk = b"these are my notes, not a database\n" * 100
    (workspace / "preferences.sqlite").write_bytes(junk)
    with pytest.raises(MlxDpoError, match="preferences.sqlite: not a usable preference database"):
        PreferenceStore(workspace)
    assert (workspace / "preferences.sqlite").read_bytes() == junk


def test_a_database_of_another_program_is_refused(workspace):
    workspace.mkdir()
    with sqlite3.connect(workspace / "preferences.sqlite") as raw:
        raw.execute("CREATE TABLE contacts (name TEXT)")
    raw.close()
    with pytest.raises(MlxDpoError, match="not an mlx-dpo preference store"):
        PreferenceStore(workspace)


def test_create_false_refuses_a_missing_store_and_creates_nothing(workspace):
    with pytest.raises(MlxDpoError, match="no preference store here"):
        PreferenceStore(workspace, create=False)
    assert not workspace.exists()


def test_a_closed_store_refuses_further_calls(store):
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        store.count_pairs()


# --- adding and reading pairs -----------------------------------------------------------------------------


def test_an_added_pair_is_returned_as_stored_and_is_there_after_reopening(workspace):
    with PreferenceStore(workspace, clock=Clock()) as s:
        pair = s.add_pair(
            [user("Hi?")], "Hello!", "Go away.", sampler="SmolLM2-135M-Instruct + adapters/v1", note="polite wins"
        )
    assert pair == StoredPair(
        id=pair.id,
        prompt=[user("Hi?")],
        chosen="Hello!",
        rejected="Go away.",
        origin="typed",
        sampler="SmolLM2-135M-Instruct + adapters/v1",
        created_at=pair.created_at,
        updated_at=pair.created_at,
        note="polite wins",
        split="train",
        external_id=None,
    )
    with PreferenceStore(workspace) as s:
        assert s.get_pair(pair.id) == pair
        assert s.list_pairs() == [pair]


def test_a_string_prompt_is_one_user_message_and_a_multi_turn_prompt_is_kept_in_order(store):
    assert store.add_pair("Hi?", "Hello!", "Go away.").prompt == [user("Hi?")]
    turns = [system("Be brief."), user("Capital of Italy?"), assistant("Rome."), user("Its river?")]
    assert store.add_pair(turns, "The Tiber.", "Rivers are long.").prompt == turns


def test_message_keys_other_than_role_and_content_are_dropped(store):
    pair = store.add_pair([{"role": "user", "content": "Q?", "name": "bob"}], "A.", "B.")
    assert pair.prompt == [user("Q?")]


def test_answer_text_is_kept_exactly_as_given(store):
    pair = store.add_pair("Q?", "  line one\n\nline two  ", "\tother")
    assert (pair.chosen, pair.rejected) == ("  line one\n\nline two  ", "\tother")


@pytest.mark.parametrize("prompt", ["", "   \n", []], ids=["empty", "blank", "no messages"])
def test_an_empty_prompt_is_refused_with_a_clear_message(store, prompt):
    with pytest.raises(MlxDpoError, match="^prompt is empty$"):
        store.add_pair(prompt, "A.", "B.")
    assert store.count_pairs() == 0


def test_identical_answers_are_refused_even_when_only_surrounding_whitespace_differs(store):
    with pytest.raises(MlxDpoError, match="chosen and rejected are identical; a pair needs two different answers"):
        store.add_pair("Q?", "Same answer.", "  Same answer.\n")
    assert store.count_pairs() == 0


@pytest.mark.parametrize(
    "prompt, chosen, rejected, message",
    [
        ("Q?", "", "B.", "chosen is empty"),
        ("Q?", "A.", " ", "rejected is empty"),
        ("Q?", None, "B.", "chosen: expected a string, got NoneType"),
        ([user("Q?"), assistant("A.")], "A.", "B.", "prompt[1].role: the last prompt message must be from the user"),
        ([user("Q?"), system("S."), user("Q?")], "A.", "B.", "prompt[1].role: a system message must come first"),
        ([{"role": "bot", "content": "Q?"}], "A.", "B.", 'prompt[0].role: unknown role "bot"'),
        ([user("  ")], "A.", "B.", "prompt[0].content is empty"),
        (42, "A.", "B.", "prompt: expected a string or a list of messages, got number"),
    ],
)
def test_invalid_pairs_are_refused_naming_the_field(store, prompt, chosen, rejected, message):
    with pytest.raises(MlxDpoError) as raised:
        store.add_pair(prompt, chosen, rejected)
    assert message in str(raised.value)
    assert store.count_pairs() == 0


def test_every_problem_of_a_pair_is_named_at_once(store):
    with pytest.raises(MlxDpoError, match="^prompt is empty; chosen is empty; rejected is empty$"):
        store.add_pair("", "", "")


@pytest.mark.parametrize("field, value", [("origin", "guessed"), ("split", "test")])
def test_an_unknown_origin_or_split_is_refused(store, field, value):
    with pytest.raises(MlxDpoError, match=f"{field} must be one of"):
        store.add_pair("Q?", "A.", "B.", **{field: value})


def test_each_origin_is_accepted(store):
    for origin in ("typed", "sampled", "imported", "compared"):
        assert store.add_pair(f"Q {origin}?", "A.", "B.", origin=origin).origin == origin


def test_getting_a_missing_pair_is_an_error(store):
    with pytest.raises(MlxDpoError, match="no stored pair with id 99"):
        store.get_pair(99)


def test_to_preference_pair_uses_the_imported_id_or_a_store_id(store):
    typed = store.add_pair([system("S."), user("Q?")], "A.", "B.")
    imported = store.add_pair("Q2?", "A.", "B.", external_id="demo-07")
    assert typed.to_preference_pair() == PreferencePair(f"store-{typed.id}", [system("S."), user("Q?")], "A.", "B.")
    assert imported.to_preference_pair().id == "demo-07"


# --- editing, swapping, deleting --------------------------------------------------------------------------


def test_update_changes_only_the_fields_given_and_bumps_updated_at(store):
    pair = store.add_pair("Q?", "A.", "B.", note="first try")
    edited = store.update_pair(pair.id, chosen="A better answer.")
    assert edited.chosen == "A better answer."
    assert (edited.prompt, edited.rejected, edited.note, edited.split) == (pair.prompt, "B.", "first try", "train")
    assert edited.created_at == pair.created_at
    assert edited.updated_at > pair.updated_at
    assert store.get_pair(pair.id) == edited


def test_update_checks_the_edited_pair_like_add_and_keeps_the_old_one_on_error(store):
    pair = store.add_pair("Q?", "A.", "B.")
    with pytest.raises(MlxDpoError, match="identical"):
        store.update_pair(pair.id, rejected="A.")
    with pytest.raises(MlxDpoError, match="prompt is empty"):
        store.update_pair(pair.id, prompt="")
    with pytest.raises(MlxDpoError, match="split must be one of"):
        store.update_pair(pair.id, split="test")
    assert store.get_pair(pair.id) == pair


def test_an_empty_note_clears_the_note_and_none_leaves_it(store):
    pair = store.add_pair("Q?", "A.", "B.", note="keep me")
    assert store.update_pair(pair.id, chosen="A!").note == "keep me"
    assert store.update_pair(pair.id, note="").note is None


def test_moving_a_pair_to_valid_takes_it_out_of_the_training_split(store):
    a = store.add_pair("Q1?", "A.", "B.")
    b = store.add_pair("Q2?", "A.", "B.")
    store.update_pair(b.id, split="valid")
    assert store.count_pairs() == 2
    assert (store.count_pairs("train"), store.count_pairs("valid")) == (1, 1)
    assert [p.id for p in store.list_pairs(split="valid")] == [b.id]
    assert [p.id for p in store.training_pairs("train")] == [f"store-{a.id}"]
    assert [p.id for p in store.training_pairs("valid")] == [f"store-{b.id}"]


def test_swap_exchanges_chosen_and_rejected(store):
    pair = store.add_pair("Q?", "Right.", "Wrong.")
    swapped = store.swap_pair(pair.id)
    assert (swapped.chosen, swapped.rejected) == ("Wrong.", "Right.")
    assert swapped.updated_at > pair.updated_at
    assert store.swap_pair(pair.id).chosen == "Right."


def test_delete_removes_the_pair_and_a_missing_one_is_an_error(store):
    keep = store.add_pair("Q1?", "A.", "B.")
    gone = store.add_pair("Q2?", "A.", "B.")
    store.delete_pair(gone.id)
    assert store.list_pairs() == [keep]
    with pytest.raises(MlxDpoError, match=f"no stored pair with id {gone.id}"):
        store.delete_pair(gone.id)
    with pytest.raises(MlxDpoError, match="no stored pair"):
        store.update_pair(gone.id, note="x")


# --- listing and searching --------------------------------------------------------------------------------


def test_pairs_are_listed_newest_first(store):
    ids = [store.add_pair(f"Q{i}?", "A.", "B.").id for i in range(3)]
    assert [p.id for p in store.list_pairs()] == ids[::-1]


def test_search_matches_prompt_answers_and_note_ignoring_case(store):
    in_prompt = store.add_pair([system("You are TERSE."), user("Tell me about the École.")], "A.", "B.")
    in_chosen = store.add_pair("Q1?", "The answer mentions a Zebra.", "B.")
    in_rejected = store.add_pair("Q2?", "A.", "zebras everywhere")
    in_note = store.add_pair("Q3?", "A.", "B.", note="ZEBRA crossing")
    store.add_pair("Q4?", "Nothing here.", "Nor here.")

    assert store.list_pairs(search="zebra") == [in_note, in_rejected, in_chosen]
    assert store.list_pairs(search="école") == [in_prompt]
    assert store.list_pairs(search="terse") == [in_prompt]  # the system message counts too
    assert store.list_pairs(search="role") == []  # the JSON around the messages does not
    assert len(store.list_pairs(search="")) == len(store.list_pairs(search=None)) == 5


def test_filters_for_split_and_origin_combine_with_search(store):
    store.add_pair("Cats?", "A.", "B.", origin="typed")
    sampled = store.add_pair("Cats again?", "A.", "B.", origin="sampled", sampler="m")
    valid = store.add_pair("Cats in valid?", "A.", "B.", origin="sampled", split="valid")
    assert store.list_pairs(origin="sampled") == [valid, sampled]
    assert store.list_pairs(origin="sampled", split="train") == [sampled]
    assert store.list_pairs(search="VALID", origin="sampled") == [valid]
    assert store.list_pairs(origin="imported") == []
    with pytest.raises(MlxDpoError, match="origin must be one of"):
        store.list_pairs(origin="bogus")


# --- ties, skips and undo ---------------------------------------------------------------------------------


def test_a_tie_is_kept_with_its_answers_and_no_pair(store):
    skip = store.add_skip("Which is better?", answers=["One.", "Two."], sampler="m")
    assert skip == Skip(skip.id, [user("Which is better?")], "tie", skip.created_at, ["One.", "Two."], "m")
    assert store.count_pairs() == 0
    assert store.list_skips() == [skip]


def test_skips_are_listed_newest_first_and_need_a_reason(store):
    first = store.add_skip("Q1?", reason="skipped")
    second = store.add_skip("Q2?")
    assert store.list_skips() == [second, first]
    with pytest.raises(MlxDpoError, match="needs a reason"):
        store.add_skip("Q3?", reason=" ")
    with pytest.raises(MlxDpoError, match="prompt is empty"):
        store.add_skip("")


def test_undo_deletes_the_latest_pair_and_returns_it(store):
    kept = store.add_pair("Q1?", "A.", "B.")
    latest = store.add_pair("Q2?", "Chosen.", "Rejected.", origin="sampled", sampler="m")
    assert store.undo_last_label() == UndoResult("pair", latest, None)
    assert store.list_pairs() == [kept]


def test_undo_of_a_tie_deletes_the_skip_and_returns_its_prompt_and_answers(store):
    store.add_pair("Q1?", "A.", "B.")
    tie = store.add_skip("Q2?", answers=["Left.", "Right."])
    undone = store.undo_last_label()
    assert undone == UndoResult("skip", None, tie)
    assert undone.skip.prompt == [user("Q2?")] and undone.skip.answers == ["Left.", "Right."]
    assert store.list_skips() == []
    assert store.count_pairs() == 1


def test_undo_walks_back_through_the_labels_then_returns_none(store):
    p1 = store.add_pair("Q1?", "A.", "B.")
    s1 = store.add_skip("Q2?")
    p2 = store.add_pair("Q3?", "A.", "B.")
    assert [store.undo_last_label() for _ in range(4)] == [
        UndoResult("pair", p2, None),
        UndoResult("skip", None, s1),
        UndoResult("pair", p1, None),
        None,
    ]


def test_pairs_not_saved_as_labels_are_never_undone(store, tmp_path):
    store.import_jsonl(write_jsonl(tmp_path / "in.jsonl", *STANDARD_ROWS))
    store.add_pair("Q?", "A.", "B.", label=False)
    assert store.undo_last_label() is None
    assert store.count_pairs() == 3


def test_undo_returns_the_pair_as_edited(store):
    pair = store.add_pair("Q?", "A.", "B.")
    edited = store.swap_pair(pair.id)
    assert store.undo_last_label().pair == edited


def test_a_deleted_pair_leaves_the_undo_history(store):
    first = store.add_pair("Q1?", "A.", "B.")
    second = store.add_pair("Q2?", "A.", "B.")
    store.delete_pair(second.id)
    assert store.undo_last_label().pair == first
    assert store.undo_last_label() is None


def test_the_undo_history_survives_reopening(workspace):
    with PreferenceStore(workspace) as s:
        pair = s.add_pair("Q?", "A.", "B.")
    with PreferenceStore(workspace) as s:
        assert s.undo_last_label().pair == pair


# --- candidates -------------------------------------------------------------------------------------------


def test_candidates_are_kept_oldest_first_until_deleted(store):
    a = store.add_candidate("Q1?", ["One.", "Two."], sampler="m")
    b = store.add_candidate([user("Q2?")], ["Only one."])
    assert a == Candidate(a.id, [user("Q1?")], ["One.", "Two."], "m", a.created_at)
    assert store.list_candidates() == [a, b]
    store.delete_candidate(a.id)
    assert store.list_candidates() == [b]
    with pytest.raises(MlxDpoError, match=f"no candidate with id {a.id}"):
        store.delete_candidate(a.id)


def test_a_candidate_needs_a_valid_prompt_and_a_list_of_answers(store):
    with pytest.raises(MlxDpoError, match="at least one answer"):
        store.add_candidate("Q?", [])
    with pytest.raises(MlxDpoError, match="answers must be a list of strings"):
        store.add_candidate("Q?", "One.")
    with pytest.raises(MlxDpoError, match="prompt is empty"):
        store.add_candidate(" ", ["One."])
    assert store.list_candidates() == []


def test_judging_a_candidate_saves_the_label_and_consumes_the_candidate_together(store):
    judged = store.add_candidate("Q1?", ["Good.", "Bad."])
    tied = store.add_candidate("Q2?", ["Same.", "Same!"])
    waiting = store.add_candidate("Q3?", ["x", "y"])
    store.add_pair("Q1?", "Good.", "Bad.", origin="sampled", candidate_id=judged.id)
    store.add_skip("Q2?", answers=tied.answers, candidate_id=tied.id)
    assert store.list_candidates() == [waiting]
    # A refused label consumes nothing.
    with pytest.raises(MlxDpoError, match="identical"):
        store.add_pair("Q3?", "x", "x", candidate_id=waiting.id)
    assert store.list_candidates() == [waiting]


# --- import -----------------------------------------------------------------------------------------------


def test_import_reads_both_trl_formats_and_skips_pairs_already_stored(store, tmp_path):
    standard = write_jsonl(tmp_path / "standard.jsonl", *STANDARD_ROWS)
    extra = {"prompt": "New?", "chosen": "Yes.", "rejected": "No."}
    conv = write_jsonl(tmp_path / "conv.jsonl", *(conversational(r) for r in [*STANDARD_ROWS, extra]))

    assert store.import_jsonl(standard) == ImportResult(added=2, duplicates=0, skipped_invalid=0, errors=[])
    # The same pairs in the other format are the same pairs.
    assert store.import_jsonl(conv) == ImportResult(added=1, duplicates=2, skipped_invalid=0, errors=[])
    assert store.count_pairs() == 3


def test_imported_pairs_have_origin_imported_the_split_asked_and_the_file_ids(store, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", {**STANDARD_ROWS[0], "id": "row-a"}, {**STANDARD_ROWS[1], "id": 7})
    store.import_jsonl(path, split="valid")
    pairs = store.list_pairs()
    assert {(p.origin, p.split, p.sampler) for p in pairs} == {("imported", "valid", None)}
    assert sorted(p.external_id for p in pairs) == ["7", "row-a"]


def test_a_pair_typed_earlier_is_a_duplicate_on_import(store, tmp_path):
    store.add_pair("What is 2 + 2?", "4.", "Numbers are tricky.")
    result = store.import_jsonl(write_jsonl(tmp_path / "in.jsonl", *STANDARD_ROWS))
    assert (result.added, result.duplicates) == (1, 1)


def test_a_malformed_file_is_refused_naming_file_line_and_field_and_adds_nothing(store, tmp_path):
    store.add_pair("Existing?", "A.", "B.")
    path = write_jsonl(tmp_path / "bad.jsonl", STANDARD_ROWS[0], {"prompt": "Q?", "chosen": "A."}, STANDARD_ROWS[1])
    with pytest.raises(MlxDpoError) as raised:
        store.import_jsonl(path)
    assert f"{path}:2: field 'rejected': is missing" in str(raised.value)
    assert store.count_pairs() == 1


def test_a_file_that_is_not_json_lines_is_refused_with_its_line(store, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", STANDARD_ROWS[0], '{"prompt": "unterminated')
    with pytest.raises(MlxDpoError, match=f"{path}:2: not valid JSON"):
        store.import_jsonl(path)
    assert store.count_pairs() == 0


def test_an_unreadable_file_is_refused_clearly(store, tmp_path):
    with pytest.raises(MlxDpoError, match="missing.jsonl: no such file"):
        store.import_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(MlxDpoError, match="is a folder"):
        store.import_jsonl(tmp_path)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(STANDARD_ROWS[0]).encode() + b"\n" + '{"prompt": "café"}'.encode("latin-1"))
    with pytest.raises(MlxDpoError, match=f"{latin1}:2: not valid UTF-8"):
        store.import_jsonl(latin1)
    assert store.count_pairs() == 0


def test_skip_invalid_imports_the_good_rows_and_reports_the_bad_ones(store, tmp_path):
    path = write_jsonl(
        tmp_path / "in.jsonl", STANDARD_ROWS[0], {"prompt": "Q?", "chosen": "A.", "rejected": "A."}, STANDARD_ROWS[1]
    )
    result = store.import_jsonl(path, skip_invalid=True)
    assert (result.added, result.duplicates, result.skipped_invalid) == (2, 0, 1)
    assert result.errors == [
        f"{path}:2: field 'rejected': is identical to 'chosen'; a pair needs two different answers"
    ]


def test_an_import_that_fails_midway_adds_nothing(store, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "in.jsonl", *STANDARD_ROWS, {"prompt": "Third?", "chosen": "A.", "rejected": "B."})
    real_insert, calls = pair_records._insert_pair, []

    def failing_insert(*args):
        calls.append(1)
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error (simulated)")
        return real_insert(*args)

    monkeypatch.setattr(pair_records, "_insert_pair", failing_insert)
    with pytest.raises(sqlite3.OperationalError):
        store.import_jsonl(path)
    assert store.count_pairs() == 0
    monkeypatch.undo()
    assert store.import_jsonl(path).added == 3  # and the store is usable afterwards


def test_import_pairs_takes_pairs_already_read(store, tmp_path):
    pairs = load_pairs(write_jsonl(tmp_path / "in.jsonl", *STANDARD_ROWS)).pairs
    assert store.import_pairs(pairs) == ImportResult(added=2, duplicates=0, skipped_invalid=0, errors=[])
    assert store.import_pairs([*pairs, pairs[0]]).duplicates == 3


# --- export -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["conversational", "standard"])
def test_export_gives_back_exactly_the_pairs_imported(store, tmp_path, style):
    rows = [{**STANDARD_ROWS[0], "id": "first"}, STANDARD_ROWS[1]]  # one explicit id, one derived from content
    source = write_jsonl(tmp_path / "in.jsonl", *(conversational(r) if style == "conversational" else r for r in rows))
    store.import_jsonl(source)
    out = tmp_path / "out.jsonl"
    assert store.export_jsonl(out, style=style) == 2
    assert load_pairs(out).pairs == load_pairs(source).pairs

    # ... and a second store fed the export exports the same file again.
    with PreferenceStore(tmp_path / "other") as other:
        other.import_jsonl(out)
        other.export_jsonl(tmp_path / "again.jsonl", style=style)
    assert (tmp_path / "again.jsonl").read_bytes() == out.read_bytes()


def test_export_writes_every_stored_pair_oldest_first_or_one_split(store, tmp_path):
    a = store.add_pair("Q1?", "A.", "B.")
    b = store.add_pair([system("S."), user("Q2?")], "A.", "B.", split="valid")
    out = tmp_path / "out.jsonl"
    assert store.export_jsonl(out) == 2
    assert load_pairs(out).pairs == [a.to_preference_pair(), b.to_preference_pair()]
    assert store.export_jsonl(out, split="valid") == 1
    assert load_pairs(out).pairs == [b.to_preference_pair()]


def test_exporting_a_multi_message_prompt_in_standard_style_is_refused_and_writes_nothing(store, tmp_path):
    store.add_pair("Q1?", "A.", "B.")
    store.add_pair([system("S."), user("Q2?")], "A.", "B.")
    out = tmp_path / "out.jsonl"
    with pytest.raises(MlxDpoError, match="use the conversational style"):
        store.export_jsonl(out, style="standard")
    assert not out.exists()
    with pytest.raises(MlxDpoError, match="style must be one of"):
        store.export_jsonl(out, style="sharegpt")


def test_exported_ids_stay_unique_when_an_imported_id_matches_a_store_id(store, tmp_path):
    typed = store.add_pair("Typed?", "A.", "B.")  # exported as "store-1"
    store.import_jsonl(write_jsonl(tmp_path / "in.jsonl", {"id": f"store-{typed.id}", **STANDARD_ROWS[0]}))
    out = tmp_path / "out.jsonl"
    store.export_jsonl(out)
    ids = [p.id for p in load_pairs(out).pairs]  # load_pairs refuses repeated ids
    assert len(set(ids)) == 2 and ids[0] == f"store-{typed.id}"


def test_training_pairs_are_one_split_oldest_first(store):
    first = store.add_pair("Q1?", "A.", "B.")
    store.add_pair("Q2?", "A.", "B.", split="valid")
    third = store.add_pair("Q3?", "A.", "B.")
    assert store.training_pairs() == [first.to_preference_pair(), third.to_preference_pair()]


# --- overview and health ----------------------------------------------------------------------------------


def test_stats_count_pairs_by_split_and_origin_skips_and_candidates(store):
    store.add_pair("Q1?", "A.", "B.")
    store.add_pair("Q2?", "A.", "B.", origin="sampled", split="valid")
    store.add_pair("Q3?", "A.", "B.", origin="sampled")
    store.add_skip("Q4?")
    store.add_candidate("Q5?", ["x", "y"])
    assert store.stats() == {
        "path": str(store.path),
        "schema_version": SCHEMA_VERSION,
        "journal_mode": "wal",
        "pairs": 3,
        "by_split": {"train": 2, "valid": 1},
        "by_origin": {"typed": 1, "sampled": 2, "imported": 0, "compared": 0},
        "skips": 1,
        "candidates": 1,
    }


def test_integrity_check_says_ok(store):
    store.add_pair("Q?", "A.", "B.")
    assert store.integrity_check() == "ok"


# --- migrations -------------------------------------------------------------------------------------------


def _raw(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for s in statements:
            conn.execute(s)
    conn.close()


def test_a_version_0_database_made_by_hand_is_migrated_on_open(workspace):
    workspace.mkdir()
    _raw(
        workspace / "preferences.sqlite",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta VALUES ('schema_version', '0')",
    )
    with PreferenceStore(workspace) as s:
        assert s.stats()["schema_version"] == SCHEMA_VERSION
        assert s.add_pair("Q?", "A.", "B.").id == 1


def test_an_empty_file_is_opened_as_a_new_store(workspace):
    workspace.mkdir()
    (workspace / "preferences.sqlite").touch()
    with PreferenceStore(workspace) as s:
        assert s.stats()["schema_version"] == SCHEMA_VERSION


def test_a_new_migration_runs_once_on_open_and_keeps_the_data(workspace, monkeypatch):
    with PreferenceStore(workspace) as s:
        pair = s.add_pair("Q?", "A.", "B.")
    runs = []

    def add_rating(conn):
        runs.append(1)
        conn.execute("ALTER TABLE pairs ADD COLUMN rating INTEGER")
        conn.execute("UPDATE pairs SET rating = 5")

    monkeypatch.setattr(schema_module, "MIGRATIONS", [*schema_module.MIGRATIONS, add_rating])
    for _ in range(2):
        with PreferenceStore(workspace) as s:
            assert s.stats()["schema_version"] == SCHEMA_VERSION + 1
            assert s.get_pair(pair.id) == pair  # readers name their columns: a new one changes nothing
    assert runs == [1]
    conn = sqlite3.connect(workspace / "preferences.sqlite")
    assert conn.execute("SELECT rating FROM pairs").fetchall() == [(5,)]
    conn.close()


def test_a_failing_migration_leaves_the_database_as_it_was(workspace, monkeypatch):
    with PreferenceStore(workspace) as s:
        pair = s.add_pair("Q?", "A.", "B.")

    def half_done(conn):
        conn.execute("ALTER TABLE pairs ADD COLUMN rating INTEGER")
        raise sqlite3.OperationalError("simulated failure after the first statement")

    monkeypatch.setattr(schema_module, "MIGRATIONS", [*schema_module.MIGRATIONS, half_done])
    with pytest.raises(sqlite3.OperationalError, match="simulated"):
        PreferenceStore(workspace)
    monkeypatch.undo()
    with PreferenceStore(workspace) as s:
        assert s.stats()["schema_version"] == SCHEMA_VERSION
        assert s.list_pairs() == [pair]
    conn = sqlite3.connect(workspace / "preferences.sqlite")
    assert "rating" not in [c[1] for c in conn.execute("PRAGMA table_info(pairs)")]
    conn.close()


def test_a_database_from_a_newer_mlx_dpo_is_refused_and_left_untouched(workspace):
    with PreferenceStore(workspace) as s:
        s.add_pair("Q?", "A.", "B.")
    _raw(workspace / "preferences.sqlite", f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}'")
    before = (workspace / "preferences.sqlite").read_bytes()
    with pytest.raises(
        MlxDpoError,
        match=f"newer mlx-dpo \\(schema version {SCHEMA_VERSION + 1}; this one reads up to "
        f"{SCHEMA_VERSION}\\); upgrade mlx-dpo",
    ):
        PreferenceStore(workspace)
    assert (workspace / "preferences.sqlite").read_bytes() == before


# --- threads and processes --------------------------------------------------------------------------------


def test_calls_from_several_threads_are_serialized(store):
    errors = []

    def label(t):
        try:
            for i in range(25):
                store.add_pair(f"Thread {t} question {i}?", "A.", "B.")
                store.list_pairs(search="question")
        except Exception as e:  # noqa: BLE001  # reported below
            errors.append(e)

    threads = [threading.Thread(target=label, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_pairs() == 100
    assert store.integrity_check() == "ok"


def test_two_stores_on_one_workspace_see_each_others_writes(workspace):
    with PreferenceStore(workspace) as tui, PreferenceStore(workspace) as cli:
        tui.add_pair("Q1?", "A.", "B.")
        cli.add_pair("Q2?", "A.", "B.")
        assert tui.count_pairs() == cli.count_pairs() == 2


# --- durability: a label acknowledged is a label kept, whatever kills the process -------------------------

# Adds pairs numbered from the current count, printing "ack N" (N = pairs stored) after each add_pair returns.
# In "pause" mode it stops after `n` and sleeps, so the kill lands after the last ack, not during a write.
LABELER = textwrap.dedent(
    """
    import sys, time
    from mlx_dpo.data.store import PreferenceStore

    workspace, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = PreferenceStore(workspace)
    i = store.count_pairs()
    while True:
        store.add_pair(f"Question {i}?", f"Good answer {i}.", f"Bad answer {i}.", origin="sampled")
        i += 1
        print(f"ack {i}", flush=True)
        if mode == "pause" and i >= n:
            time.sleep(60)
    """
)


def _label_until_killed(workspace: Path, mode: str, kill_after: int) -> int:
    """Run LABELER, SIGKILL it right after it acknowledges `kill_after` pairs; returns the last ack it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", LABELER, str(workspace), mode, str(kill_after)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, child.kill)  # never hang the suite
    watchdog.start()
    try:
        for line in child.stdout:
            if line == f"ack {kill_after}\n":
                child.send_signal(signal.SIGKILL)
                break
        rest = child.stdout.read()  # acks printed between our read and the kill
        child.wait()
    finally:
        watchdog.cancel()
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    acks = [int(x.split()[1]) for x in rest.splitlines() if x.startswith("ack ")]
    return max(acks, default=kill_after)


def _assert_pairs_are_whole_and_numbered(store: PreferenceStore, count: int) -> None:
    pairs = sorted(store.list_pairs(), key=lambda p: p.id)
    assert len(pairs) == count
    for i, p in enumerate(pairs):
        assert (p.prompt, p.chosen, p.rejected) == ([user(f"Question {i}?")], f"Good answer {i}.", f"Bad answer {i}.")


def test_every_acknowledged_label_survives_a_kill(workspace):
    assert _label_until_killed(workspace, "pause", 5) == 5
    with PreferenceStore(workspace) as s:
        assert s.integrity_check() == "ok"
        _assert_pairs_are_whole_and_numbered(s, 5)


def test_a_kill_in_the_middle_of_a_stream_of_labels_loses_no_acknowledged_one(workspace):
    for _ in range(3):  # each round kills a fresh labeler while it is writing as fast as it can
        with PreferenceStore(workspace) as s:
            start = s.count_pairs()
        last_ack = _label_until_killed(workspace, "loop", start + 20)
        with PreferenceStore(workspace) as s:
            assert s.integrity_check() == "ok"
            stored = s.count_pairs()
            # Every acknowledged pair is there; at most the one being written when the kill came is extra.
            assert last_ack <= stored <= last_ack + 1
            _assert_pairs_are_whole_and_numbered(s, stored)


def test_the_store_is_one_database_and_small_tables_and_the_old_method_names_are_theirs(store):
    from mlx_dpo.data.pair_records import Pairs

    assert PreferenceStore.__mro__ == (PreferenceStore, object)  # composition, not a chain of subclasses
    tables = (store.pairs, store.labels, store.feedback, store.rounds, store.judging)
    assert all(table._db is store.db for table in tables)  # one connection, one lock, one clock
    assert store.add_pair.__func__ is Pairs.add and store.add_pair.__self__ is store.pairs
    pair = store.pairs.add("Q?", "A.", "B.")
    assert store.get_pair(pair.id) == store.pairs.get(pair.id) and store.rounds.untrained_pairs() == [pair]
