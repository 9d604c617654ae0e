"""Which two of a prompt's sampled answers become its pair: more signal from every judgment, and never a cut answer
preferred over a finished one.

    judged = choose_pair(judge, prompt, answers)   # answers: N Answers of one prompt, in the order sampled

- A score judge scores all N answers (its score includes the missing-end penalty: mlx_dpo.online.judges) and the
  pair is the best against the worst, as iterative preference learning does (Xiong et al.; Self-Rewarding LMs).
  Precisely: of the (chosen, rejected) pairs the rule allows, the one with the largest score gap; ties go to the
  earlier answers. Without the rule binding, that is (highest score, lowest score). Equal scores: a tie.
- A prefer judge (a Python function comparing two answers, or an LLM) runs a knockout: answer 1 is the first
  king; each next answer challenges the king once (the king shown first), and a decisive win makes the winner
  king. That is N - 1 comparisons, every one kept (`Comparison`, stored with the pair or skip). The pair is the
  last king against the *first loser*: the answer that lost the knockout's first decisive comparison (neither a
  tie, nor a skip, nor a verdict the rule refuses). Every later king beat the king that beat it, so the first
  loser sits at the bottom of the longest chain of judged wins: without more comparisons it is the knockout's
  best guess at the worst answer. No decisive comparison: a tie if the judge called any, else a skip.
- The rule (`verdict.may_prefer`, the one function): a program judge's pair never prefers an unfinished answer
  (cut at max tokens) over a finished one. A knockout verdict that does is kept but decides nothing (`counted`
  False); a score judge's pair is chosen among the allowed ones. A person is exempt (the app's own labels).

The two answers of the result are in the order they were sampled (the first is stored as shown first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlx_dpo.data.online_records import Comparison
from mlx_dpo.online.verdict import Choice, Judge, Messages, may_prefer


@dataclass(frozen=True)
class Judged:
    """What a judge made of one prompt's answers: the two kept (indices into the answers, in sampled order),
    its `choice` between them (1 or 2: that one is chosen; 0: a tie; None: a skip) and why (`note`)."""

    first: int
    second: int
    choice: Choice
    note: str = ""
    comparisons: list[Comparison] = field(default_factory=list)  # a prefer judge's, in the order made


def choose_pair(judge: Judge, prompt: Messages, answers: list[str]) -> Judged:
    """The pair (or tie, or skip) a program judge gives for one prompt's answers (see the module docstring)."""
    if len(answers) < 2:
        raise ValueError("a judge needs at least two answers to compare")
    if judge.kind == "score":
        return _best_against_worst(judge, prompt, answers)
    return _knockout(judge, prompt, answers)


def _best_against_worst(judge: Judge, prompt: Messages, answers: list[str]) -> Judged:
    scores = [float(judge.score(prompt, a)) for a in answers]  # type: ignore[arg-type]
    listed = ", ".join(f"{s:g}" for s in scores)
    allowed = [
        (scores[c] - scores[r], -c, -r)
        for c in range(len(answers))
        for r in range(len(answers))
        if scores[c] > scores[r] and may_prefer(answers[c], answers[r])
    ]
    if not allowed:
        if len(set(scores)) == 1:
            return Judged(0, 1, 0, f"scores {listed}: all equal")
        return Judged(0, 1, None, f"scores {listed}: only unfinished answers score above finished ones")
    _gap, c, r = max(allowed)
    chosen, rejected = -c, -r
    first, second = sorted((chosen, rejected))
    note = f"scores {listed}: answer {chosen + 1} over {rejected + 1}" if len(answers) > 2 else f"scores {listed}"
    return Judged(first, second, 1 if first == chosen else 2, note)


def _knockout(judge: Judge, prompt: Messages, answers: list[str]) -> Judged:
    king, first_loser = 0, None
    comparisons: list[Comparison] = []
    for challenger in range(1, len(answers)):
        verdict = judge.judge([prompt], [(answers[king], answers[challenger])])[0]
        winner, loser = {1: (king, challenger), 2: (challenger, king)}.get(verdict.choice, (None, None))
        counted = winner is not None and may_prefer(answers[winner], answers[loser])
        note = verdict.note or (f"scores {verdict.scores[0]:g} vs {verdict.scores[1]:g}" if verdict.scores else "")
        if winner is not None and not counted:
            note = "; ".join(filter(None, [note, "prefers an unfinished answer over a finished one: not counted"]))
        comparisons.append(
            Comparison(len(comparisons), answers[king], answers[challenger], verdict.choice, counted, note)
        )
        if counted:
            first_loser = loser if first_loser is None else first_loser
            king = winner
    one = comparisons[0].note if len(comparisons) == 1 else ""  # two answers: the one verdict's own note
    if first_loser is not None:
        first, second = sorted((king, first_loser))
        summary = f"knockout of {len(answers)}: answer {king + 1} won, answer {first_loser + 1} lost first"
        return Judged(first, second, 1 if first == king else 2, one or summary, comparisons)
    if any(c.choice == 0 for c in comparisons):
        return Judged(0, 1, 0, one or f"knockout of {len(answers)}: no decisive comparison", comparisons)
    refused = any(c.choice in (1, 2) for c in comparisons)
    return Judged(
        0,
        1,
        None,
        "the judge preferred an unfinished answer over a finished one" if refused else one or "skipped by the judge",
        comparisons,
    )
