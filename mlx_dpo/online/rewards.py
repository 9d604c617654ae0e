"""Rewards anyone can read: score judges built from a spec, for DPO and GRPO rounds alike.

`--judge "reward:TERM + TERM + ..."` is a score judge whose score is the weighted sum of its terms. A term is
NAME, NAME=VALUE, and either may end in @WEIGHT (default 1):

  length=N      1 - |words - N| / N, at least 0: 1.0 for an answer of exactly N words
  question      1.0 when the answer ends with a question mark, else 0.0
  no_repeats    1 - the share of the answer's word 3-grams that repeat an earlier one (NAME=K for K-grams)
  regex=PATTERN 1.0 when the whole answer (stripped) matches PATTERN, else 0.0

For example `reward:length=40@0.5 + question@0.5` or `reward:regex=^Answer: .+$`. Terms are separated by " + "
(with the spaces), so a pattern may hold "+" and "@" itself; a trailing @WEIGHT is read as a weight only when it
is a number. Each term reads the answer's text only; the missing-end penalty applies as to any score judge.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mlx_dpo.errors import MlxDpoError

PREFIX = "reward:"
_WORD = re.compile(r"\w+(?:['’-]\w+)*")

Term = Callable[[str], float]


def repeated_share(text: str, n: int = 3) -> float:
    """The share of a text's word n-grams that repeat an earlier n-gram of the same text (0: none repeats)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def _length(value: str, spec: str) -> Term:
    target = _number(value, spec, "length", whole=True)
    return lambda text: max(0.0, 1.0 - abs(len(_WORD.findall(text)) - target) / target)


def _question(value: str, spec: str) -> Term:
    if value:
        raise MlxDpoError(f"judge {spec}: question takes no value (got {value!r})")
    return lambda text: 1.0 if text.rstrip().endswith("?") else 0.0


def _no_repeats(value: str, spec: str) -> Term:
    n = _number(value, spec, "no_repeats", whole=True) if value else 3
    return lambda text: 1.0 - repeated_share(text, n)


def _regex(value: str, spec: str) -> Term:
    try:
        pattern = re.compile(value, re.DOTALL)
    except re.error as e:
        raise MlxDpoError(f"judge {spec}: regex {value!r} does not compile: {e}") from None
    return lambda text: 1.0 if pattern.fullmatch(text.strip()) else 0.0


TERMS: dict[str, Callable[[str, str], Term]] = {
    "length": _length,
    "question": _question,
    "no_repeats": _no_repeats,
    "regex": _regex,
}


def _number(value: str, spec: str, name: str, whole: bool = False) -> float:
    try:
        number = int(value) if whole else float(value)
    except ValueError:
        number = 0
    if not number or number <= 0:
        raise MlxDpoError(f"judge {spec}: {name} needs a positive {'whole ' if whole else ''}number, got {value!r}")
    return number


def _weighted(term: str) -> tuple[str, float]:
    """A term and its weight: a trailing @WEIGHT when it is a number, else the whole term at weight 1."""
    body, at, weight = term.rpartition("@")
    if at:
        try:
            return body, float(weight)
        except ValueError:
            pass
    return term, 1.0


def parse(spec: str) -> Callable[[str, str], float]:
    """The score function `(prompt, answer) -> float` a `reward:...` spec names (MlxDpoError: one line)."""
    terms: list[tuple[Term, float]] = []
    for raw in spec[len(PREFIX) :].split(" + "):
        body, weight = _weighted(raw.strip())
        name, _, value = body.partition("=")
        if name.strip() not in TERMS:
            raise MlxDpoError(f"judge {spec}: unknown reward {name.strip()!r}; known: {', '.join(TERMS)}")
        terms.append((TERMS[name.strip()](value.strip() if name.strip() != "regex" else value, spec), weight))

    def score(prompt: str, answer: str) -> float:
        return sum(weight * term(str(answer)) for term, weight in terms)

    return score
