"""Unpaired feedback for KTO: single answers marked good or bad, read from data files or made from pairs.

Accepted rows (TRL's unpaired preference format; other keys are ignored), from JSON Lines or Parquet files, a
dataset folder or a Hub dataset (rows.py, hub.py), as pairs are read:
  standard        {"prompt": "...", "completion": "...", "label": true|false}
  conversational  {"prompt": [messages], "completion": [messages], "label": true|false}
with an optional "id". The prompt and completion follow the pair rules (pairs.py: `parse_prompt`,
`parse_completion`); `label` must be a JSON boolean. A file may also hold preference pairs: each pair gives
one desirable example (its chosen answer) and one undesirable one (its rejected answer), as
`feedback_from_pairs` does for pairs given in memory (in any of TRL's pair formats, implicit prompt
included: pairs.py's `pair_from_row`). Bad rows are reported with file, line (or Parquet row) and field, as
pairs are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_dpo.data.hub import data_source
from mlx_dpo.data.pairs import PreferencePair, is_unpaired_row, pair_from_row, parse_completion, parse_prompt
from mlx_dpo.data.rows import RowError, invalid_rows_error, read_rows
from mlx_dpo.errors import MlxDpoError

MISSING = object()


@dataclass(frozen=True)
class Feedback:
    """One prompt with one answer, marked desirable (True) or undesirable (False)."""

    id: str
    prompt: list[dict[str, str]]
    completion: str
    desirable: bool
    source: str | None = field(default=None, compare=False)


def feedback_id(prompt: list[dict[str, str]], completion: str, desirable: bool) -> str:
    canonical = json.dumps(
        {"prompt": prompt, "completion": completion, "label": desirable},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:16]


def feedback_from_pairs(pairs: Iterable[PreferencePair]) -> list[Feedback]:
    """Each pair as two examples: its chosen answer desirable, its rejected answer undesirable.

    All chosen answers come first, then all rejected ones (as TRL's unpair_preference_dataset does), so the
    rotation in `kto_pairs` pairs a prompt with another prompt's answer, not its own pair's other answer.
    """
    pairs = list(pairs)
    return [Feedback(f"{p.id}/chosen", p.prompt, p.chosen, True, p.source) for p in pairs] + [
        Feedback(f"{p.id}/rejected", p.prompt, p.rejected, False, p.source) for p in pairs
    ]


def _parse(obj: Any) -> tuple[list[Feedback], list[tuple[str | None, str]]]:
    """A row as examples (one, or two from a pair), or its problems."""
    if not isinstance(obj, dict):
        return [], [(None, "expected a JSON object")]
    problems: list[tuple[str | None, str]] = []
    explicit_id = obj.get("id") is not None
    if not is_unpaired_row(obj):
        pair = pair_from_row(obj, problems)
        if pair is None:
            return [], problems
        prompt, chosen, rejected = pair
        row_id = str(obj["id"]) if explicit_id else feedback_id(prompt, chosen + "\0" + rejected, True)
        return feedback_from_pairs([PreferencePair(row_id, prompt, chosen, rejected)]), []
    prompt = parse_prompt(obj.get("prompt", ""), "prompt", problems) if "prompt" in obj else None
    if "prompt" not in obj:
        problems.append(("prompt", "is missing"))
    completion = (
        parse_completion(obj["completion"], "completion", problems)
        if "completion" in obj
        else problems.append(("completion", "is missing"))
    )
    label = obj["label"]
    if not isinstance(label, bool):
        problems.append(("label", f"must be true or false, got {json.dumps(label)}"))
    if problems:
        return [], problems
    row_id = str(obj["id"]) if explicit_id else feedback_id(prompt, completion, label)
    return [Feedback(row_id, prompt, completion, label)], []


def load_feedback(
    path: str | Path, *, skip_invalid: bool = False, config: str | None = None, default_split: str = "train"
) -> tuple[list[Feedback], int]:
    """Every example of a data source of unpaired feedback (or pairs), and how many bad rows were skipped:
    a JSONL or Parquet file, a dataset folder or a Hub dataset (`config`: its --data-config; hub.py).

    Unless `skip_invalid`, any bad row raises MlxDpoError listing them all with file, line (or row) and field.
    """
    source = data_source(path, config, default_split)
    name = source.name
    examples: list[list[Feedback]] = []
    from_pairs: list[list[Feedback]] = []  # [chosen, rejected] of each pair row
    errors: list[RowError] = []
    skipped = 0
    rows = ((place, obj, why) for shown, file in source.files for place, obj, why in read_rows(file, shown))
    for place, obj, not_json in rows:
        found, problems = ([], [(None, not_json)]) if not_json else _parse(obj)
        if problems:
            skipped += 1
            errors.extend(RowError(place.file, place.index, fld, msg, place.kind) for fld, msg in problems)
        found = [Feedback(f.id, f.prompt, f.completion, f.desirable, str(place)) for f in found]
        if found:
            (examples if len(found) == 1 else from_pairs).append(found)
    if errors and not skip_invalid:
        raise invalid_rows_error(name, skipped, errors)
    # As feedback_from_pairs: the pairs' chosen answers, then their rejected ones.
    examples = [f for (f,) in examples] + [c for c, _ in from_pairs] + [r for _, r in from_pairs]
    if not examples:
        raise MlxDpoError(
            f"{name}: no feedback rows found; expected one JSON object per line with "
            '"prompt", "completion" and "label" (or preference pairs)'
        )
    return examples, skipped


def kto_pairs(examples: list[Feedback], batch_size: int) -> tuple[list[PreferencePair], dict[str, bool]]:
    """KTO examples in the pair layout (methods.py), and each one's label by pair id.

    chosen = the example's answer; rejected = the answer of the example before it in its chunk of
    `batch_size` (the first takes the chunk's last): TRL's rotation, giving the mismatched (prompt, answer)
    pairs whose log-ratios estimate KTO's KL reference point.
    """
    out, labels = [], {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        for i, ex in enumerate(chunk):
            pair_id = ex.id if ex.id not in labels else f"{ex.id}#{start + i}"
            out.append(PreferencePair(pair_id, ex.prompt, ex.completion, chunk[i - 1].completion, ex.source))
            labels[pair_id] = ex.desirable
    return out, labels
