"""TRL's implicit prompt: a row with no prompt whose `chosen` and `rejected` are whole conversations (or texts)
that begin alike, as in the HH-RLHF datasets. The prompt is where they begin alike; each answer is the rest.

    k, problem = parting_turn(chosen, rejected)   # prompt = chosen[:k]; answers chosen[k:], rejected[k:]

Conversations are compared turn by turn (role and content), texts character by character, as TRL's
extract_prompt does, and, as it does, a text prompt that would end with a space gives the space back to the
answers. Unlike TRL (which would train on whatever follows), a conversation pair must part in its final
assistant answer: one that shares no first turn, or parts earlier (a user turn after the parting), is one
problem naming the field where it parts. pairs.py checks the split row as any other (`check_pair`).
"""

from __future__ import annotations

from typing import Any

Problem = tuple[str | None, str]  # as pairs.py's


def parting_turn(chosen: str | list[dict], rejected: str | list[dict]) -> tuple[int, Problem | None]:
    """Where two answers of an implicit-prompt row part (the prompt's length), and a problem if the row cannot
    be split: two texts, or two lists of parsed messages ({"role", "content"})."""
    if isinstance(chosen, str) != isinstance(rejected, str):
        return 0, ("rejected", "expected the same kind as 'chosen' (two texts or two conversations)")
    k = _shared_length(chosen, rejected)
    if isinstance(chosen, str):
        if 0 < k < min(len(chosen), len(rejected)) and chosen[k - 1] == " ":
            k -= 1  # "...Assistant: It" + " is" / " was": the space starts each answer
        if k == 0 and chosen.strip() != rejected.strip():
            return 0, (
                "rejected",
                "shares no beginning with 'chosen', so there is no prompt to take from them; give a 'prompt' field",
            )
        return k, None
    if k == len(chosen) == len(rejected):
        return k, ("rejected", "is identical to 'chosen'; a pair needs two different answers")
    if k == 0:
        return k, (
            "rejected[0]",
            "differs from 'chosen[0]': the two conversations share no first turn, so there "
            "is no prompt to take from them; give a 'prompt' field",
        )
    if k in (len(chosen), len(rejected)):
        short = "chosen" if k == len(chosen) else "rejected"
        return k, (short, f"ends where the two conversations part (after {k} turns), so it has no answer")
    if any(m.get("role") != "assistant" for m in chosen[k:] + rejected[k:]):
        return k, (
            f"chosen[{k}]",
            f"differs from 'rejected[{k}]' before the last assistant turn; in an implicit-"
            "prompt row only the final assistant answer may differ",
        )
    return k, None


def _shared_length(a: Any, b: Any) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k
