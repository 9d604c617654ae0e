"""Prompt queue files for the Label screen: plain text or JSONL, checked by the same rules as a pair's prompt."""

from __future__ import annotations

import json

import pytest
from helpers import write_jsonl

from tui.prompts import QueueError, read_prompt_queue


def test_a_text_file_is_one_user_prompt_per_non_empty_line(tmp_path):
    (tmp_path / "q.txt").write_text("first\n\n  second  \n")
    assert read_prompt_queue(tmp_path / "q.txt") == [
        [{"role": "user", "content": "first"}],
        [{"role": "user", "content": "second"}],
    ]


def test_jsonl_rows_take_a_string_a_message_list_or_a_transcript_whose_last_answer_is_dropped(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl",
        *[
            {"prompt": "plain"},
            {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]},
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "old answer"}]},
        ],
    )
    assert read_prompt_queue(path) == [
        [{"role": "user", "content": "plain"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        [{"role": "user", "content": "Q"}],
    ]


def test_a_byte_order_mark_is_tolerated_as_in_pair_files(tmp_path):
    (tmp_path / "q.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "hi"}).encode() + b"\n")
    assert read_prompt_queue(tmp_path / "q.jsonl") == [[{"role": "user", "content": "hi"}]]


def test_every_bad_row_is_named_by_file_line_and_field(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        *[
            {"prompt": "fine"},
            {"nope": 1},
            "not json",
            {"prompt": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}]},
            {"prompt": "   "},
        ],
    )
    with pytest.raises(QueueError) as info:
        read_prompt_queue(path)
    message = str(info.value)
    assert f'{path}:2: no "prompt" (or "messages") field' in message
    assert f"{path}:3: not valid JSON" in message
    assert f"{path}:4: prompt[1].role: a system message must come first" in message
    assert f"{path}:5: prompt is empty" in message
    assert f"{path}:1" not in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no such file"),
        (b"ok\n\xff\n", ":2: not valid UTF-8 (byte 0xff)"),
        (b"\n\n", "holds no prompts"),
    ],
)
def test_an_unreadable_or_empty_queue_is_one_clear_error(tmp_path, content, expected):
    path = tmp_path / "q.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(QueueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_prompt_queue(path)
