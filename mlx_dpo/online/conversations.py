"""Online rounds on conversations: what the next user message of a judged conversation is.

A prompt file may hold conversations (JSONL rows with "messages": the model answers the last user turn) and, for
`--turns N` above 1, the user's later messages: a row's "follow_ups", a list of strings asked in order. After a
turn is judged into a pair, its chosen answer becomes the assistant's turn and the next message is asked: the row's
next follow-up, else `--follow-up` (OnlineSettings.follow_up). The new prompt is the whole conversation so far, so
a judge sees all of it (`prompt.messages`), and its pair points to the turn it continues (the store's `continues=`,
mlx_dpo.data.thread_records). A turn that gave no pair (a tie or skip) ends that conversation for the round.

The loop that samples and judges the later turns is mlx_dpo.online.loop's (`_later_turns`).
"""

from __future__ import annotations

from pathlib import Path

from mlx_dpo.data.prompt_file import PromptFileError
from mlx_dpo.data.records import StoredPair
from mlx_dpo.data.rows import parse_json_line, read_text

FIELD = "follow_ups"


def read_follow_ups(path: str | Path) -> list[list[str]]:
    """Each prompt's follow-up messages, in the prompt file's order (read_prompt_file's): a row's "follow_ups", or
    none (plain-text files hold none). PromptFileError naming file and line for a "follow_ups" that is not a list
    of non-blank strings. The prompts themselves were checked by read_prompt_file."""
    path = Path(path).expanduser()
    text = read_text(path)
    if path.suffix.lower() not in (".jsonl", ".json"):
        return [[] for line in text.splitlines() if line.strip()]
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row, _ = parse_json_line(line)
        value = row.get(FIELD, []) if isinstance(row, dict) else []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise PromptFileError(
                f'{path}:{number}: field "{FIELD}": expected a list of non-blank strings (the user\'s next messages)'
            )
        out.append(list(value))
    return out


def follow_up(follow_ups: list[str], turn: int, default: str) -> str:
    """The user's message that opens `turn` (2 for the first follow-up) of a conversation."""
    return follow_ups[turn - 2] if len(follow_ups) >= turn - 1 else default


def next_prompt(pair: StoredPair, message: str) -> list[dict]:
    """The conversation after a judged turn: its prompt, its chosen answer as the assistant's turn, then `message`."""
    return [dict(m) for m in pair.prompt] + [
        {"role": "assistant", "content": str(pair.chosen)},
        {"role": "user", "content": message},
    ]
