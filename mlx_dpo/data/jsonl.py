"""What every reader of a JSON Lines file (pairs, KTO rows, prompt files) does with one line and its text.

A user's file may hold anything: JSON cut short, arrays nested thousands deep (Python's parser gives up with a
RecursionError), or a lone half of a UTF-16 surrogate pair written as an escape ("\\ud800"): valid JSON, but no
text that UTF-8 (the store, a tokenizer, a file written back) can carry. Each is a bad row, named by its file,
line and field by the reader, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

SURROGATE = "holds a lone surrogate escape (\\ud800-\\udfff), which is not text; fix the file's encoding"


def parse_json_line(line: str) -> tuple[Any, str | None]:
    """A line's value, or (None, what is wrong with it)."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} (column {e.colno})"
    except RecursionError:  # "[[[[..." thousands deep; no row needs it
        return None, "not valid JSON here: nested too deeply"


def encodable(text: str) -> bool:
    """Whether `text` is text UTF-8 can carry (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
