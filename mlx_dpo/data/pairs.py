"""Preference pairs: read them in TRL's preference formats (files or Hub datasets), check them, write them.

Accepted rows (other keys are ignored), from JSON Lines or Parquet files, local or on the Hub (rows.py, hub.py):
  standard        {"prompt": "...", "chosen": "...", "rejected": "..."}
  conversational  {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
  implicit prompt {"chosen": [whole conversation], "rejected": [whole conversation]} (or two texts): the
                  turns both start with are the prompt, the rest each answer, as TRL's extract_prompt splits them
with an optional "id" (string or integer) and optional "chosen_finished" / "rejected_finished" (true or false:
false marks an answer cut at max tokens, mlx_dpo.data.answers; written only for such answers, so a round trip keeps
the flag). A message is {"role": "system"|"user"|"assistant", "content": "..."};
extra message keys are dropped. The two styles may be mixed per field (a string prompt with message completions).
TRL's unpaired rows ({"prompt", "completion", "label"}) are KTO's (feedback.py); here they are one clear refusal.

Rules a pair must meet, stated once in `check_pair` (the reader, the store and the app's forms all ask it):
  - prompt: a non-blank string, or a non-empty message list whose system message (if any) comes first and
    whose last message is from the user (the model answers it);
  - chosen / rejected: a non-blank string, or a non-empty list of assistant messages; several messages are
    joined with a blank line into one completion string (the store and the app take strings only);
  - chosen and rejected differ (ignoring surrounding whitespace: `same_answers`);
  - in a file, ids are unique. Rows without an id get one derived from their content.
An implicit-prompt row is split first (`extract_prompt`): its two conversations must share their first turns and
part only in their final assistant answer. Text is kept exactly as written; whitespace only matters for the
"is empty" and "identical" checks.
A problem is a (field, message) pair, e.g. ("chosen", "is empty"): the reader prints it with file and line (or
Parquet row), the store joins a pair's problems into one line (`describe_problems`), and a form shows the first one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mlx_dpo.atomic import atomic_file
from mlx_dpo.data.answers import Answer, is_finished
from mlx_dpo.data.hub import data_source
from mlx_dpo.data.implicit_prompt import parting_turn
from mlx_dpo.data.rows import Place, RowError, invalid_rows_error, read_rows, text_problem
from mlx_dpo.errors import MlxDpoError

DEMO_PAIRS_PATH = Path(__file__).with_name("datasets") / "demo_pairs.jsonl"

ROLES = ("system", "user", "assistant")
_COMPLETION_JOINER = "\n\n"

Style = Literal["conversational", "standard"]


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred (`chosen`) and a dispreferred (`rejected`) completion."""

    id: str
    prompt: list[dict[str, str]]  # messages, ending with a user turn
    chosen: str
    rejected: str
    # Where the pair was read from ("file.jsonl:12"); not part of equality, so a round trip compares equal.
    source: str | None = field(default=None, compare=False)


class UnpairedRows(MlxDpoError):
    """A data source of TRL's unpaired rows (KTO's) where pairs were expected: feedback.py reads those."""


@dataclass
class LoadResult:
    pairs: list[PreferencePair]
    errors: list[RowError]  # may hold several per row
    skipped: int  # rows dropped because they had at least one error


def pair_id(prompt: list[dict[str, str]], chosen: str, rejected: str) -> str:
    """A stable id from the content: the same pair gets the same id in either file format, on any machine."""
    canonical = json.dumps(
        {"prompt": prompt, "chosen": chosen, "rejected": rejected},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:16]


def load_pairs(
    path: str | Path, *, skip_invalid: bool = False, config: str | None = None, default_split: str = "train"
) -> LoadResult:
    """Read and check every row of a data source: a JSONL or Parquet file, a dataset folder or a Hub dataset
    (`owner/name[:split]`, `config` its --data-config; hub.py), in any TRL preference format.

    Every bad row is reported with file, line (or row) and field. Unless `skip_invalid`, any bad row raises
    MlxDpoError listing them all; with it, bad rows are dropped and counted. No usable pair raises too.
    """
    source = data_source(path, config, default_split)
    name = source.name
    pairs: list[PreferencePair] = []
    errors: list[RowError] = []
    skipped = rows = unpaired = 0
    first_use: dict[str, tuple[Place, bool]] = {}  # id -> (where, was the id explicit)

    for shown, file in source.files:
        for place, obj, not_json in read_rows(file, shown):
            rows += 1
            unpaired += is_unpaired_row(obj)
            row, problems = (None, [(None, not_json)]) if not_json else _parse_row(obj)
            if row is not None:
                explicit = row.id is not None
                id_ = row.id if explicit else pair_id(row.prompt, row.chosen, row.rejected)
                if id_ in first_use:
                    problems.append(_duplicate_problem(id_, explicit, place, *first_use[id_]))
                else:
                    first_use[id_] = (place, explicit)
                    pairs.append(PreferencePair(id_, row.prompt, row.chosen, row.rejected, str(place)))
            if problems:
                skipped += 1
                errors.extend(RowError(place.file, place.index, fld, msg, place.kind) for fld, msg in problems)

    if rows and unpaired == rows:  # a KTO file given to a pair method: one line, not one per row
        raise UnpairedRows(
            f"{name}: holds unpaired rows (prompt, completion, label), which only --loss kto trains on; "
            "train with --loss kto, or give preference pairs (prompt, chosen, rejected)"
        )
    if errors and not skip_invalid:
        raise invalid_rows_error(name, skipped, errors)
    if not pairs:
        detail = f" ({skipped} invalid row{'s' if skipped != 1 else ''} skipped)" if skipped else ""
        raise MlxDpoError(f"{name}: no preference pairs found{detail}; expected one JSON object per line")
    return LoadResult(pairs, errors, skipped)


FINISHED_FIELDS = ("chosen_finished", "rejected_finished")  # present (false) only for an answer cut at max tokens


def pair_to_record(pair: PreferencePair, style: Style = "conversational") -> dict[str, Any]:
    """The JSON object for one pair, always with its id so reloading keeps it, and `chosen_finished` /
    `rejected_finished` false for an answer cut at max tokens (other readers ignore the extra keys).

    "standard" holds a plain-string prompt, so it only fits pairs whose prompt is a single user message.
    """
    cut = {
        name: False for name, answer in zip(FINISHED_FIELDS, (pair.chosen, pair.rejected)) if not is_finished(answer)
    }
    if style == "conversational":
        return {
            "id": pair.id,
            "prompt": [dict(m) for m in pair.prompt],
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
            **cut,
        }
    if style == "standard":
        if len(pair.prompt) != 1:
            raise MlxDpoError(
                f"pair {pair.id!r}: its prompt has {len(pair.prompt)} messages, but the standard style holds "
                "a single user prompt; use the conversational style"
            )
        return {
            "id": pair.id,
            "prompt": pair.prompt[0]["content"],
            "chosen": pair.chosen,
            "rejected": pair.rejected,
            **cut,
        }
    raise ValueError(f"unknown style {style!r}; expected 'conversational' or 'standard'")


def write_pairs(path: str | Path, pairs: Iterable[PreferencePair], style: Style = "conversational") -> None:
    """Write pairs as JSONL, atomically: readers see the old file or the complete new one."""
    # Build every record first so a pair that does not fit `style` fails before anything is written.
    lines = [json.dumps(pair_to_record(p, style), ensure_ascii=False) + "\n" for p in pairs]
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


# --- the rules --------------------------------------------------------------------------------------------

Problem = tuple[str | None, str]  # (field or None for the whole row, message)

MISSING: Any = object()  # what the reader passes for a field the row does not have
TWO_DIFFERENT_ANSWERS = "a pair needs two different answers"  # why identical answers are refused, wherever
IDENTICAL_ANSWERS: Problem = ("rejected", f"is identical to 'chosen'; {TWO_DIFFERENT_ANSWERS}")
# How a problem reads in a one-line summary when "<field> <message>" would not read well.
_SUMMARY = {IDENTICAL_ANSWERS: f"chosen and rejected are identical; {TWO_DIFFERENT_ANSWERS}"}


class CheckedPair(NamedTuple):
    prompt: list[dict[str, str]]  # messages, ending with a user turn
    chosen: str
    rejected: str


def check_pair(
    prompt: Any, chosen: Any, rejected: Any, problems: list[Problem], *, text_answers: bool = False
) -> CheckedPair | None:
    """Every rule a pair must meet: the pair as stored (prompt as messages, answers as text), or None with
    its problems appended to `problems` in field order.

    A field may be MISSING. `text_answers`: the answers must be strings (the store's API and the app's
    editors), not message lists (files). The answers are compared only once nothing else is wrong, counting
    problems the caller found before (a bad id): a broken pair has nothing sure to compare.
    """
    values: dict[str, Any] = {}
    for name, value, parse in (
        ("prompt", prompt, parse_prompt),
        ("chosen", chosen, parse_completion),
        ("rejected", rejected, parse_completion),
    ):
        if value is MISSING:
            problems.append((name, "is missing"))
        elif text_answers and parse is parse_completion and not isinstance(value, str):
            problems.append((name, f"expected a string, got {type(value).__name__}"))
        else:
            values[name] = parse(value, name, problems)
    if problems:
        return None
    if same_answers(values["chosen"], values["rejected"]):
        problems.append(IDENTICAL_ANSWERS)
        return None
    return CheckedPair(values["prompt"], values["chosen"], values["rejected"])


def pair_problem(prompt: Any, chosen: str, rejected: str) -> Problem | None:
    """The first rule a pair typed or edited in the app breaks (a form shows one problem at a time), or None."""
    problems: list[Problem] = []
    check_pair(prompt, chosen, rejected, problems, text_answers=True)
    return problems[0] if problems else None


def checked_prompt(value: Any, name: str = "prompt") -> list[dict[str, str]]:
    """A lone prompt (a skip's, a candidate's, a queued one) as messages; else MlxDpoError naming every problem."""
    problems: list[Problem] = []
    messages = parse_prompt(value, name, problems)
    if problems:
        raise MlxDpoError(describe_problems(problems))
    return messages


def same_answers(first: str, second: str) -> bool:
    """Whether two answers count as the same (surrounding whitespace ignored), so they cannot form a pair."""
    return first.strip() == second.strip()


# --- reading ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    id: str | None  # None when the row has no explicit id
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str


def is_unpaired_row(obj: Any) -> bool:
    """TRL's unpaired preference row (KTO's): prompt, completion and a label, no chosen answer."""
    return isinstance(obj, dict) and "label" in obj and "chosen" not in obj


UNPAIRED: Problem = (None, "an unpaired row (prompt, completion, label): only --loss kto trains on these")


def pair_from_row(obj: dict, problems: list[Problem]) -> CheckedPair | None:
    """A row in any TRL preference format as a checked pair: explicit prompt, or implicit (`extract_prompt`).

    As TRL's maybe_extract_prompt: the prompt is implicit when there is none, or when it is text and the answers
    are whole conversations (some datasets carry both). A text prompt with answers of assistant messages only
    is an explicit row in mixed styles.
    """
    if is_unpaired_row(obj):
        problems.append(UNPAIRED)
        return None
    prompt, chosen, rejected = (obj.get(name, MISSING) for name in ("prompt", "chosen", "rejected"))
    if (
        chosen is not MISSING
        and rejected is not MISSING
        and (
            prompt is MISSING
            or prompt is None
            or (isinstance(prompt, str) and _holds_a_prompt(chosen) and _holds_a_prompt(rejected))
        )
    ):
        return extract_prompt(chosen, rejected, problems)
    return check_pair(prompt, chosen, rejected, problems)


def _holds_a_prompt(value: Any) -> bool:
    """A whole conversation: a message list with a turn that is not the assistant's."""
    return isinstance(value, list) and any(isinstance(m, dict) and m.get("role") != "assistant" for m in value)


def extract_prompt(chosen: Any, rejected: Any, problems: list[Problem]) -> CheckedPair | None:
    """An implicit-prompt row split as TRL's extract_prompt does: the longest shared start of `chosen` and
    `rejected` (turns of two conversations, or characters of two texts) is the prompt, the rest each answer.
    Conversations must share their first turns and part only in their final assistant turns (implicit_prompt.py).
    """
    count = len(problems)
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, (str, list)):
            parse_completion(value, name, problems)  # "expected a string or a list of messages, got null"
    if len(problems) == count and isinstance(chosen, list) and isinstance(rejected, list):
        chosen, rejected = (
            _parse_messages(value, name, problems, roles=ROLES)
            for name, value in (("chosen", chosen), ("rejected", rejected))
        )
    if len(problems) == count:
        k, problem = parting_turn(chosen, rejected)
        if problem is not None:
            problems.append(problem)
    if len(problems) > count:
        return None
    return check_pair(chosen[:k], chosen[k:], rejected[k:], problems)


def _parse_row(obj: Any) -> tuple[_Row | None, list[Problem]]:
    if not isinstance(obj, dict):
        return None, [(None, f"expected a JSON object, got {_json_type(obj)}")]
    problems: list[Problem] = []
    row_id = _parse_id(obj["id"], problems) if "id" in obj and obj["id"] is not None else None
    pair = pair_from_row(obj, problems)
    finished = [_parse_finished(obj.get(name, True), name, problems) for name in FINISHED_FIELDS]
    if pair is None or problems:
        return None, problems
    chosen, rejected = (text if done else Answer(text, False) for text, done in zip(pair[1:], finished))
    return _Row(row_id, pair.prompt, chosen, rejected), []


def _parse_finished(value: Any, name: str, problems: list[Problem]) -> bool:
    """A row's optional `chosen_finished` / `rejected_finished`: true or false (absent or null: finished)."""
    if value is None or isinstance(value, bool):
        return value is not False
    problems.append((name, f"expected true or false, got {_json_type(value)}"))
    return True


def _parse_id(value: Any, problems: list[Problem]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.append(("id", f"expected a string or integer, got {_json_type(value)}"))
        return None
    if isinstance(value, str) and text_problem(value):
        problems.append(("id", text_problem(value)))
        return None
    return str(value)


def parse_prompt(value: Any, name: str, problems: list[Problem]) -> list[dict[str, str]] | None:
    """A prompt (text or messages ending with a user turn) as messages; else None, with `problems` added.

    One set of rules for file rows, typed and sampled pairs, and prompt queues.
    """
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if _non_blank(value, name, problems) else None
    messages = _parse_messages(value, name, problems, roles=ROLES)
    if messages is None:
        return None
    ok = True
    for i, m in enumerate(messages[1:], start=1):
        if m["role"] == "system":
            problems.append((f"{name}[{i}].role", "a system message must come first"))
            ok = False
    if messages[-1]["role"] != "user":
        last = len(messages) - 1
        role = messages[-1]["role"]
        problems.append((f"{name}[{last}].role", f"the last prompt message must be from the user, got {role!r}"))
        ok = False
    return messages if ok else None


def parse_completion(value: Any, name: str, problems: list[Problem]) -> str | None:
    """A completion (text or assistant messages) as text; else None, with `problems` added."""
    if isinstance(value, str):
        return value if _non_blank(value, name, problems) else None
    messages = _parse_messages(value, name, problems, roles=("assistant",))
    return None if messages is None else _COMPLETION_JOINER.join(m["content"] for m in messages)


def _parse_messages(
    value: Any, name: str, problems: list[Problem], *, roles: tuple[str, ...]
) -> list[dict[str, str]] | None:
    if not isinstance(value, list):
        problems.append((name, f"expected a string or a list of messages, got {_json_type(value)}"))
        return None
    if not value:
        problems.append((name, "is empty"))
        return None
    count = len(problems)
    messages = []
    for i, msg in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(msg, dict):
            problems.append((where, f'expected a message {{"role": ..., "content": ...}}, got {_json_type(msg)}'))
            continue
        role, content = msg.get("role"), msg.get("content")
        if "role" not in msg:
            problems.append((f"{where}.role", "is missing"))
        elif role not in ROLES:
            problems.append((f"{where}.role", f"unknown role {_short(role)}; expected {', '.join(map(repr, ROLES))}"))
        elif role not in roles:  # e.g. a user message inside a completion
            problems.append((f"{where}.role", f"must be {' or '.join(map(repr, roles))} here, got {role!r}"))
        if "content" not in msg:
            problems.append((f"{where}.content", "is missing"))
        elif isinstance(content, str):
            _non_blank(content, f"{where}.content", problems)
        else:
            problems.append((f"{where}.content", f"expected a string, got {_json_type(content)}"))
        messages.append({"role": role, "content": content})
    return messages if len(problems) == count else None


def _non_blank(text: str, name: str, problems: list[Problem]) -> bool:
    problem = text_problem(text)  # empty, or not text UTF-8 can carry (rows.py)
    if problem:
        problems.append((name, problem))
    return problem is None


def _duplicate_problem(row_id: str, explicit: bool, place: Place, first: Place, first_explicit: bool) -> Problem:
    at = f"on line {first.index}" if (first.file, first.kind) == (place.file, "line") else f"at {first}"
    if explicit or first_explicit:
        return ("id", f"duplicate id {row_id!r} (first used {at})")
    where = f"line {first.index}" if at.startswith("on") else str(first)
    return (None, f"duplicate pair: same prompt, chosen and rejected as {where}")


def describe_problems(problems: list[Problem]) -> str:
    """One line: "prompt is empty; prompt[1].role: a system message must come first"."""
    return "; ".join(_SUMMARY.get((f, m)) or (f"{f} {m}" if m.startswith("is ") else f"{f}: {m}") for f, m in problems)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
