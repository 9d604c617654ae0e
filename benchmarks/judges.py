"""The held-back judge of benchmarks/online.py: a readable rule no setting was chosen with.

Declared before any tuning (2026-12-08) and never used while choosing a default: the settings sweep
(`benchmarks/online.py sweep`) runs with the shipped `one_sentence` judge only; this judge appears only in the
final multi-seed runs, to see whether the chosen defaults carry over to a preference they were not fitted to.

    --judge benchmarks/judges.py:addresses_reader

  addresses_reader   the share of the answer's sentences that speak to the reader ("you", "your", "you're",
                     "yourself"): 1.0 when every sentence does, 0.0 when none does. A tutor's habit ("You can
                     see this when...") that the default model shows now and then, so N answers to a prompt
                     differ by it and a round has pairs to learn from.
"""

from __future__ import annotations

import re

_YOU = re.compile(r"\b(you|your|you're|yourself|yours)\b", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    """The answer's sentences: split after ., ! or ? followed by a space (demo_judges' sentence ends)."""
    return [p.strip() for p in re.split(r"(?<=[.!?])\s+", text.strip()) if p.strip()]


def addresses_reader(prompt: str, answer: str) -> float:
    """The share of sentences that address the reader as "you"; 0.0 for an empty answer."""
    found = sentences(answer)
    return sum(bool(_YOU.search(s)) for s in found) / len(found) if found else 0.0
