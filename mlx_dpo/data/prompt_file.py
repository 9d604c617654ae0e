"""Prompt files: the prompts the app's Label queue and `mlx-dpo online` take, one rule for both.

A `.jsonl` / `.json` file holds one object per line with "prompt" (a string or a message list) or "messages"
(a message list; a transcript ending with an assistant turn is cut before it, so the model answers the last
user turn); any other file is plain text with one prompt per non-empty line. Each prompt is checked by the
pairs reader's rules for a prompt (mlx_dpo.data.pairs.checked_prompt), so a prompt read here can always be
saved in a pair. A bad file raises PromptFileError naming the file and the first few bad lines. A row's
"follow_ups" (the user's later messages of a conversation, for `mlx-dpo online --turns`) are read by
mlx_dpo.online.conversations.
"""

from __future__ import annotations

from pathlib import Path

from mlx_dpo.data.pairs import checked_prompt
from mlx_dpo.data.rows import parse_json_line, read_text
from mlx_dpo.errors import MlxDpoError

MAX_LISTED_ERRORS = 5


class PromptFileError(MlxDpoError, ValueError):
    """A prompt file that cannot be read; the message names the file and line."""


def read_prompt_file(path: str | Path) -> list[list[dict]]:
    """The prompts of `path`, in file order, as message lists (PromptFileError for a bad or empty file)."""
    path = Path(path).expanduser()
    try:
        text = read_text(path)  # the pairs reader's rules: UTF-8 (BOM tolerated), clear errors
    except MlxDpoError as e:
        raise PromptFileError(str(e)) from None
    if path.suffix.lower() in (".jsonl", ".json"):
        prompts = _read_jsonl(path, text)
    else:
        prompts = [[{"role": "user", "content": line.strip()}] for line in text.splitlines() if line.strip()]
    if not prompts:
        raise PromptFileError(f"{path}: holds no prompts")
    return prompts


def _read_jsonl(path: Path, text: str) -> list[list[dict]]:
    prompts, errors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row, bad = parse_json_line(line)
        if bad:
            errors.append(f"{path}:{number}: {bad}")
            continue
        try:
            prompts.append(_row_prompt(row))
        except (ValueError, MlxDpoError) as e:
            errors.append(f"{path}:{number}: {e}")
    if errors:
        more = len(errors) - MAX_LISTED_ERRORS
        raise PromptFileError("; ".join(errors[:MAX_LISTED_ERRORS]) + (f"; and {more} more" if more > 0 else ""))
    return prompts


def _row_prompt(row: object) -> list[dict]:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    name = "prompt" if "prompt" in row else "messages"
    value = row.get(name)
    if value is None:
        raise ValueError('no "prompt" (or "messages") field')
    if (
        isinstance(value, list)
        and len(value) > 1
        and isinstance(value[-1], dict)
        and value[-1].get("role") == "assistant"
    ):
        value = value[:-1]  # a chat transcript: the model answers the last user turn
    return checked_prompt(value, name)  # the same rules as a pair's prompt
