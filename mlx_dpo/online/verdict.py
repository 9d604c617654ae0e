"""What a judge is and says: the `Judge` interface, its `Verdict` on one pair, the `Prompt` and `Answer`s it is
shown, and the one rule every program judge's pair obeys (`may_prefer`).

An answer reaches a judge as an `Answer` (mlx_dpo.data.answers): a `str` whose `.finished` is False when the
sampler cut it at max tokens, so a judge may read it as it reads `prompt.messages`.

Kept apart from judges.py (which turns a spec into a judge) so every judge module, the LLM judge included,
shares these without an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mlx_dpo.data.answers import Answer, is_finished

__all__ = ["Answer", "Choice", "Judge", "Messages", "Prompt", "Verdict", "check_lengths", "is_finished", "may_prefer"]

Messages = list[dict[str, str]]
Choice = Literal[1, 2, 0] | None
KINDS = ("score", "prefer", "llm", "human")  # Judge.kind


@dataclass(frozen=True)
class Verdict:
    """A judge's answer about one pair: 1 or 2 (that answer is better), 0 (a tie) or None (skip the pair).

    `scores`: a score judge's two scores; for an LLM judge, the probability of each answer being chosen,
    averaged over both orders. `note`: a short human-readable reason (shown in the app's Data screen).
    """

    choice: Choice
    scores: tuple[float, float] | None = None
    note: str = ""


class Prompt(str):
    """The text of the last user message, with the whole conversation in `.messages`."""

    messages: Messages

    def __new__(cls, messages: Sequence[dict[str, str]] | str) -> Prompt:
        if isinstance(messages, str):  # a bare prompt text: one user message
            messages = [{"role": "user", "content": str(messages)}]
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        prompt = super().__new__(cls, users[-1] if users else "")
        prompt.messages = [dict(m) for m in messages]
        return prompt


class Judge:
    """The interface the loop, held-out measurement and the app use. `name` is what the store records."""

    name: str
    kind: str

    def judge(self, prompts: list[Messages], pairs: list[tuple[str, str]]) -> list[Verdict]:
        """One verdict per (answer_1, answer_2) pair; prompts[i] is the chat pairs[i] answers."""
        raise NotImplementedError

    def score(self, prompt: Messages, answer: str) -> float | None:
        """A score judge's score of one answer; None for judges that only compare."""
        return None

    def raw_score(self, prompt: Messages, answer: str) -> float | None:
        """A score judge's own score of one answer, no missing-end penalty (the held-out score)."""
        return self.score(prompt, answer)


def may_prefer(chosen: str, rejected: str, *, by_person: bool = False) -> bool:
    """The rule: a pair never prefers an unfinished answer (cut at max tokens) over a finished one, unless a person
    chose it. Every program judge's pair and comparison goes through here (mlx_dpo.online.pairing)."""
    return by_person or is_finished(chosen) or not is_finished(rejected)


def check_lengths(judge: Judge, prompts: list[Messages], pairs: list[tuple[str, str]]) -> None:
    """A caller's mistake (not the user's): one prompt per pair."""
    if len(prompts) != len(pairs):
        raise ValueError(f"judge {judge.name}: {len(prompts)} prompts for {len(pairs)} pairs")
