"""Specification of reading, checking and writing preference pairs (JSON Lines, TRL's two formats)."""

import json
import re

import pytest
from helpers import assistant, user, write_jsonl

from mlx_dpo.data.pairs import (
    DEMO_PAIRS_PATH,
    LoadResult,
    PreferencePair,
    RowError,
    load_pairs,
    pair_to_record,
    write_pairs,
)
from mlx_dpo.errors import MlxDpoError

GOOD = {"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "Well, numbers are tricky."}


@pytest.fixture
def data(tmp_path):
    return tmp_path / "data.jsonl"


# --- formats ----------------------------------------------------------------------------------------------


def test_standard_and_conversational_rows_give_the_same_pairs(tmp_path):
    standard = write_jsonl(tmp_path / "standard.jsonl", GOOD, {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Hm."})
    conversational = write_jsonl(
        tmp_path / "conv.jsonl",
        {"prompt": [user("What is 2 + 2?")], "chosen": [assistant("4.")], "rejected": [assistant(GOOD["rejected"])]},
        {"prompt": [user("Hi?")], "chosen": [assistant("Hello.")], "rejected": [assistant("Hm.")]},
    )
    a, b = load_pairs(standard).pairs, load_pairs(conversational).pairs
    assert a == b
    assert a[0].prompt == [user("What is 2 + 2?")]
    assert (a[0].chosen, a[0].rejected) == ("4.", GOOD["rejected"])


def test_a_multi_turn_prompt_with_a_system_message_is_kept_in_order(data):
    prompt = [
        {"role": "system", "content": "Answer briefly."},
        user("Capital of Italy?"),
        assistant("Rome."),
        user("Its river?"),
    ]
    write_jsonl(data, {"prompt": prompt, "chosen": [assistant("The Tiber.")], "rejected": [assistant("Rivers...")]})
    (pair,) = load_pairs(data).pairs
    assert pair.prompt == prompt
    assert pair.chosen == "The Tiber."
    assert pair.source == f"{data}:1"


def test_several_assistant_messages_are_joined_with_a_blank_line(data):
    write_jsonl(data, {**GOOD, "chosen": [assistant("Four."), assistant("2 + 2 = 4.")]})
    assert load_pairs(data).pairs[0].chosen == "Four.\n\n2 + 2 = 4."


def test_unknown_keys_are_ignored_and_messages_keep_only_role_and_content(data):
    write_jsonl(data, {**GOOD, "score": 0.9, "prompt": [{"role": "user", "content": "Q?", "name": "bob"}]})
    assert load_pairs(data).pairs[0].prompt == [user("Q?")]


def test_blank_lines_are_ignored_but_line_numbers_stay_true(data):
    write_jsonl(data, "", GOOD, "   ", {**GOOD, "chosen": ""})
    result = load_pairs(data, skip_invalid=True)
    assert len(result.pairs) == 1
    assert result.pairs[0].source == f"{data}:2"
    assert result.errors == [RowError(str(data), 4, "chosen", "is empty")]


# --- one bad row at a time --------------------------------------------------------------------------------

BAD_ROWS = [
    # (row, field, message fragment)
    ('{"prompt": "x", "chosen": ', None, "not valid JSON"),
    ("[1, 2]", None, "expected a JSON object, got array"),
    ({"prompt": "Q?", "rejected": "No."}, "chosen", "is missing"),
    ({**GOOD, "chosen": ""}, "chosen", "is empty"),
    ({**GOOD, "rejected": " \n\t"}, "rejected", "is empty"),
    ({**GOOD, "chosen": []}, "chosen", "is empty"),
    ({**GOOD, "prompt": 42}, "prompt", "expected a string or a list of messages, got number"),
    ({**GOOD, "chosen": None}, "chosen", "expected a string or a list of messages, got null"),
    ({**GOOD, "prompt": ["Q?"]}, "prompt[0]", "expected a message"),
    ({**GOOD, "prompt": [{"content": "Q?"}]}, "prompt[0].role", "is missing"),
    ({**GOOD, "chosen": [{"role": "assistant"}]}, "chosen[0].content", "is missing"),
    ({**GOOD, "chosen": [{"role": "assistant", "content": 4}]}, "chosen[0].content", "expected a string, got number"),
    ({**GOOD, "chosen": [assistant("  ")]}, "chosen[0].content", "is empty"),
    ({**GOOD, "prompt": [{"role": "bot", "content": "Q?"}]}, "prompt[0].role", 'unknown role "bot"'),
    ({**GOOD, "chosen": [user("4.")]}, "chosen[0].role", "must be 'assistant' here, got 'user'"),
    ({**GOOD, "prompt": [user("Q?"), assistant("A.")]}, "prompt[1].role", "last prompt message must be from the user"),
    (
        {**GOOD, "prompt": [user("Q?"), {"role": "system", "content": "S"}, user("Q?")]},
        "prompt[1].role",
        "a system message must come first",
    ),
    ({**GOOD, "rejected": " 4. "}, "rejected", "is identical to 'chosen'"),
    ({**GOOD, "id": 1.5}, "id", "expected a string or integer, got number"),
    ({**GOOD, "id": True}, "id", "expected a string or integer, got boolean"),
    ({**GOOD, "id": ""}, "id", "is empty"),
]


@pytest.mark.parametrize("row, field, fragment", BAD_ROWS, ids=[f"{f}:{m}" for _, f, m in BAD_ROWS])
def test_each_kind_of_bad_row_is_reported_with_file_line_and_field(data, row, field, fragment):
    write_jsonl(data, GOOD | {"id": "ok"}, row)
    with pytest.raises(MlxDpoError) as raised:
        load_pairs(data)
    (error,) = load_pairs(data, skip_invalid=True).errors
    assert (error.file, error.line, error.field) == (str(data), 2, field)
    assert fragment in error.message
    assert str(error) in str(raised.value)


def test_row_error_reads_file_line_field_message():
    assert str(RowError("data.jsonl", 12, "chosen", "is empty")) == "data.jsonl:12: field 'chosen': is empty"
    assert str(RowError("data.jsonl", 3, None, "not valid JSON")) == "data.jsonl:3: not valid JSON"


# --- many bad rows ----------------------------------------------------------------------------------------


def test_every_bad_row_is_reported_at_once_with_a_hint(data):
    write_jsonl(data, GOOD, "oops", {**GOOD, "chosen": ""}, {"prompt": "Q?"}, {**GOOD, "prompt": "Again?"})
    with pytest.raises(MlxDpoError) as raised:
        load_pairs(data)
    message = str(raised.value)
    assert message.startswith(f"{data}: 3 invalid rows:")
    assert f"{data}:2: not valid JSON" in message
    assert f"{data}:3: field 'chosen': is empty" in message
    assert f"{data}:4: field 'chosen': is missing" in message
    assert f"{data}:4: field 'rejected': is missing" in message  # every problem of a row, not just the first
    assert "--skip-invalid" in message


def test_a_long_error_list_is_capped(data):
    write_jsonl(data, GOOD, *["not json"] * 25)
    message = str(pytest.raises(MlxDpoError, load_pairs, data).value)
    assert message.count("not valid JSON") == 20
    assert "... and 5 more" in message


def test_skip_invalid_drops_bad_rows_and_counts_them(data):
    write_jsonl(data, GOOD, "oops", {"prompt": "Q?"}, {**GOOD, "prompt": "Other?"})
    result = load_pairs(data, skip_invalid=True)
    assert isinstance(result, LoadResult)
    assert [p.prompt[0]["content"] for p in result.pairs] == ["What is 2 + 2?", "Other?"]
    assert result.skipped == 2  # the row missing two fields counts once
    assert [(e.line, e.field) for e in result.errors] == [(2, None), (3, "chosen"), (3, "rejected")]


# --- ids --------------------------------------------------------------------------------------------------


def test_derived_ids_are_stable_and_depend_on_content(tmp_path):
    first = load_pairs(write_jsonl(tmp_path / "a.jsonl", GOOD)).pairs[0].id
    again = load_pairs(write_jsonl(tmp_path / "b.jsonl", {"x": 1, **GOOD})).pairs[0].id
    other = load_pairs(write_jsonl(tmp_path / "c.jsonl", {**GOOD, "chosen": "Four."})).pairs[0].id
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert first == again != other


def test_explicit_ids_are_kept_as_strings(data):
    write_jsonl(data, {**GOOD, "id": "q-1"}, {**GOOD, "prompt": "Other?", "id": 7})
    assert [p.id for p in load_pairs(data).pairs] == ["q-1", "7"]


def test_a_duplicate_id_is_an_error_naming_both_lines(data):
    write_jsonl(data, {**GOOD, "id": "a"}, {**GOOD, "prompt": "B?", "id": "b"}, {**GOOD, "prompt": "C?", "id": "a"})
    expected = f"{data}:3: field 'id': duplicate id 'a' (first used on line 1)"
    with pytest.raises(MlxDpoError, match=re.escape(expected)):
        load_pairs(data)
    result = load_pairs(data, skip_invalid=True)
    assert [p.id for p in result.pairs] == ["a", "b"]  # the first occurrence is kept
    assert result.skipped == 1


def test_a_repeated_pair_without_ids_is_a_duplicate(data):
    write_jsonl(data, GOOD, GOOD)
    (error,) = load_pairs(data, skip_invalid=True).errors
    assert (error.line, error.field) == (2, None)
    assert "same prompt, chosen and rejected as line 1" in error.message


# --- files ------------------------------------------------------------------------------------------------


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(MlxDpoError, match=r"nope\.jsonl: no such file"):
        load_pairs(tmp_path / "nope.jsonl")


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(MlxDpoError, match="is a folder"):
        load_pairs(tmp_path)


def test_a_non_utf8_file_is_named_with_its_line(data):
    data.write_bytes(json.dumps(GOOD).encode() + b'\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(MlxDpoError, match=rf"{re.escape(str(data))}:2: not valid UTF-8 \(byte 0xe9\)"):
        load_pairs(data)


# The kinds a new user's tour found that BAD_ROWS above does not hold (issue 15): each still one line naming
# file, line and field. A NaN is a number to Python's json; it is refused as one.
@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ":1: not valid UTF-8 (byte 0x89)"),
        (b"\x00\x01\x02binary\n", ":1: not valid JSON"),
        (
            b'{"prompt": "Q?", "chosen": NaN, "rejected": "No."}\n',
            ":1: field 'chosen': expected a string or a list of messages, got number",
        ),
        (b'{"prompt": "  ", "chosen": "Yes.", "rejected": "No."}\n', ":1: field 'prompt': is empty"),
    ],
)
def test_binary_nan_and_blank_prompt_rows_are_refused_with_their_line(data, content, fragment):
    data.write_bytes(content)
    with pytest.raises(MlxDpoError) as info:
        load_pairs(data)
    assert f"{data}{fragment}" in str(info.value)


def test_a_utf8_byte_order_mark_is_accepted(data):
    data.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert len(load_pairs(data).pairs) == 1


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_a_file_without_pairs_is_an_error(data, content):
    data.write_text(content)
    with pytest.raises(MlxDpoError, match="no preference pairs found"):
        load_pairs(data)


def test_a_file_whose_every_row_is_skipped_is_an_error(data):
    write_jsonl(data, "oops", "[]")
    with pytest.raises(MlxDpoError, match=r"no preference pairs found \(2 invalid rows skipped\)"):
        load_pairs(data, skip_invalid=True)


# --- writing ----------------------------------------------------------------------------------------------


def sample_pairs():
    return [
        PreferencePair("a", [user("Café?")], "Oui.", "Hmm, well."),
        PreferencePair(
            "b",
            [{"role": "system", "content": "Be brief."}, user("Q1"), assistant("A1"), user("Q2")],
            "A2.",
            "Er, A2 maybe.",
        ),
    ]


def test_round_trip_keeps_the_pairs(tmp_path):
    path = tmp_path / "out" / "pairs.jsonl"
    write_pairs(path, sample_pairs())
    assert load_pairs(path).pairs == sample_pairs()
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]  # no temporary file left behind
    assert "Café" in path.read_text(encoding="utf-8")  # readable, not \u-escaped


def test_round_trip_keeps_unusual_characters(tmp_path):
    # U+2028 is written raw by json.dumps and is a line break to str.splitlines; CRLF files must read too.
    pairs = [PreferencePair("u", [user("Line\u2028sep\r\nand\ttab")], "Yes\u2029.", "No\x0c.")]
    write_pairs(tmp_path / "out.jsonl", pairs)
    assert load_pairs(tmp_path / "out.jsonl").pairs == pairs
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes((json.dumps(GOOD) + "\r\n").encode())
    assert load_pairs(crlf).pairs[0].rejected == GOOD["rejected"]


def test_round_trip_keeps_derived_ids(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", GOOD)
    write_pairs(tmp_path / "out.jsonl", load_pairs(source).pairs, style="standard")
    assert load_pairs(tmp_path / "out.jsonl").pairs == load_pairs(source).pairs


def test_records_in_each_style():
    pair = sample_pairs()[0]
    assert pair_to_record(pair) == {
        "id": "a",
        "prompt": [user("Café?")],
        "chosen": [assistant("Oui.")],
        "rejected": [assistant("Hmm, well.")],
    }
    standard = {"id": "a", "prompt": "Café?", "chosen": "Oui.", "rejected": "Hmm, well."}
    assert pair_to_record(pair, "standard") == standard


def test_standard_style_refuses_a_multi_message_prompt(tmp_path):
    path = tmp_path / "out.jsonl"
    with pytest.raises(MlxDpoError, match="its prompt has 4 messages.*use the conversational style"):
        write_pairs(path, sample_pairs(), style="standard")
    assert not path.exists()


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="unknown style 'chat'"):
        pair_to_record(sample_pairs()[0], "chat")


# --- the bundled demo set ---------------------------------------------------------------------------------


def test_demo_pairs_load_cleanly_and_teach_one_style():
    result = load_pairs(DEMO_PAIRS_PATH)
    assert result.errors == [] and len(result.pairs) >= 35
    for pair in result.pairs:
        # The one lesson: answer directly; never open with filler.
        assert pair.rejected.startswith("Well, that is a great question!")
        assert not pair.chosen.startswith("Well")
        assert len(pair.chosen.split()) <= 40 and len(pair.rejected.split()) <= 60
