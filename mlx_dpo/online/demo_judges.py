"""Judges shipped with the package whose preference anyone can see on screen, for the demo and benchmarks.

Use them as `--judge mlx_dpo.online.demo_judges:NAME`. Each score is graded (not 0/1), so the mean score of a
version's samples moves smoothly as a round shifts the model, and each reads the answer's text only:

  one_sentence   answers in one sentence score 1.0, two 0.5, three 0.33, ... (1 / number of sentences)
  asks_question  how close to the end of the answer its last "?" is: 1.0 when the answer ends by asking the
                 user a question, 0.0 with no question at all
  shorter        a prefer judge: the answer with fewer words wins, equal counts tie (an example of the kind)
"""

from __future__ import annotations

import re

# A sentence ends at ., ! or ? (runs such as "?!" or "..." count once) followed by a space or the end;
# "3.5" or "e.g." inside a word does not end one.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def sentence_count(text: str) -> int:
    """Sentences in `text`; trailing words without a full stop are a sentence too. 0 for blank text."""
    text = text.strip()
    if not text:
        return 0
    ends = list(_SENTENCE_END.finditer(text))
    tail = text[ends[-1].end() :].strip() if ends else text
    return len(ends) + (1 if tail else 0)


def one_sentence(prompt: str, answer: str) -> float:
    """1 / number of sentences: one sentence scores highest; an empty answer scores 0."""
    count = sentence_count(answer)
    return 1.0 / count if count else 0.0


def asks_question(prompt: str, answer: str) -> float:
    """Where the answer's last "?" sits, as a share of its length: 1.0 when it ends with a question."""
    text = answer.strip()
    mark = text.rfind("?")
    return (mark + 1) / len(text) if mark >= 0 else 0.0


def shorter(prompt: str, answer_1: str, answer_2: str) -> int:
    """1 or 2: the answer with fewer words; 0: the same number."""
    n1, n2 = len(answer_1.split()), len(answer_2.split())
    return 1 if n1 < n2 else 2 if n2 < n1 else 0
