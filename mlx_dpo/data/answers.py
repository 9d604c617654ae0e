"""A sampled answer's text and whether it finished: `Answer`, a `str` that knows if it was cut off.

An answer *finished* when the model ended it with its end-of-turn token; it is *unfinished* when sampling stopped
because it reached max tokens. The sampler knows which (mlx-lm reports its finish reason, "stop" or "length":
mlx_dpo.online.sampling), and the flag travels on the text itself from there on:

  - to a judge: `answer.finished`, as `prompt.messages` travels on the prompt (mlx_dpo.online.verdict);
  - to the store: pairs, skips, candidates and KTO labels keep it (schema migration 5), and hand it back on
    the texts they return (`StoredPair.chosen` is an `Answer`);
  - to training: mlx_dpo.training.tokens trains an unfinished answer on its own tokens, with no end-of-turn
    token after them (see there for why);
  - to the app: the Label screen marks an unfinished answer.

Text without the flag (typed, imported, edited by a person) counts as finished: `is_finished(text)` is the one
reading of it. A new string built from an Answer (stripped, concatenated, read back from JSON) is a plain `str`
again, so code that transforms answers keeps the flag explicitly (`Answer(text, finished)`).
"""

from __future__ import annotations

import json
from typing import Any


class Answer(str):
    """An answer's text, with `finished` False when it was cut at max tokens (no end-of-turn token)."""

    finished: bool

    def __new__(cls, text: str, finished: bool = True) -> Answer:
        answer = super().__new__(cls, text)
        answer.finished = bool(finished)
        return answer

    def __reduce__(self):  # pickling (the app's training child, multiprocessing) keeps the flag
        return (Answer, (str(self), self.finished))

    def __repr__(self) -> str:
        return super().__repr__() if self.finished else f"Answer({super().__repr__()}, finished=False)"


def is_finished(answer: Any) -> bool:
    """Whether `answer` ended at its end-of-turn token: False only for an `Answer` marked unfinished."""
    return getattr(answer, "finished", True) is not False


def with_flags(texts: list[str], finished: list[bool] | None) -> list[str]:
    """Texts read back from storage, as Answers carrying their flags (None: every one finished)."""
    if finished is None:
        return [Answer(t) for t in texts]
    return [Answer(t, f) for t, f in zip(texts, finished)]


def flags(answers: list[Any]) -> list[bool] | None:
    """The flags of `answers` as storage keeps them: None when every one finished (the common case)."""
    found = [is_finished(a) for a in answers]
    return None if all(found) else found


def flags_json(answers: list[Any]) -> str | None:
    """`flags` as a stored JSON column: a list of 0/1, or None when every answer finished."""
    found = flags(answers)
    return None if found is None else json.dumps([int(f) for f in found])


def same_flag(text: str, original: Any) -> str:
    """`text` (a checked or cleaned copy of `original`) keeping `original`'s flag."""
    return text if is_finished(original) else Answer(text, False)
