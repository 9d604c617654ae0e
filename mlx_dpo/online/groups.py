"""Group rounds' rewards: a judge's reward for each of a prompt's answers, stored as a rated group
(mlx_dpo.data.rating_records) for a GRPO round (mlx_dpo.training.group_rounds).

    rewards, note = group_rewards(judge, prompt, answers)

- A score judge: each answer's score (its missing-end penalty included: mlx_dpo.online.judges), one call per answer.
- A prefer judge (a Python function or an LLM): a round-robin inside the group, every pair compared once, the
  earlier answer shown first in even-numbered comparisons and second in odd ones (so a judge's position bias
  does not favour the first answers); an answer's reward is its wins, a tie giving each ½. That is G(G−1)/2
  calls (6 for G = 4, where DPO's knockout makes 3). A win that prefers an unfinished answer over a finished one
  is not counted (mlx_dpo.online.verdict.may_prefer, the rule DPO's pairs follow).
- A person: their ratings, 1 to 5, from the app (the Label screen's rating mode).

Each answer is stored with its token ids as it trains (training/tokens.py's rule: the template's end-of-turn
token after a finished answer, none after one cut at max tokens).
"""

from __future__ import annotations

from mlx_dpo.data.online_records import PromptRef
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.models.session import ModelSession
from mlx_dpo.online.verdict import Judge, Messages, may_prefer
from mlx_dpo.training.tokens import Encoder


def round_robin(judge: Judge, prompt: Messages, answers: list[str]) -> list[float]:
    """Each answer's wins in a round-robin of the group (a tie: ½ each; a skip or a refused win: nothing)."""
    wins = [0.0] * len(answers)
    pairs = [(i, j) for i in range(len(answers)) for j in range(i + 1, len(answers))]
    for k, (i, j) in enumerate(pairs):
        first, second = (i, j) if k % 2 == 0 else (j, i)
        choice = judge.judge([prompt], [(answers[first], answers[second])])[0].choice
        if choice == 0:
            wins[i] += 0.5
            wins[j] += 0.5
        elif choice in (1, 2):
            winner, loser = (first, second) if choice == 1 else (second, first)
            if may_prefer(answers[winner], answers[loser]):
                wins[winner] += 1.0
    return wins


def group_rewards(judge: Judge, prompt: Messages, answers: list[str]) -> tuple[list[float], str]:
    """The rewards of one prompt's answers and a note saying how they were found."""
    if judge.kind == "score":
        rewards = [float(judge.score(prompt, a)) for a in answers]  # type: ignore[attr-defined]
        return rewards, "scores " + ", ".join(f"{r:g}" for r in rewards)
    rewards = round_robin(judge, prompt, answers)
    return rewards, "round-robin wins " + ", ".join(f"{r:g}" for r in rewards)


def answer_tokens(loaded: ModelSession, prompt: Messages, answers: list[str]) -> list[list[int] | None]:
    """Each answer's token ids as a round trains them (None for one the chat template cannot hold)."""
    encoder = Encoder(loaded.tokenizer)
    encoded, _ = encoder.encode_all(
        [PreferencePair(str(j), prompt, a, a) for j, a in enumerate(answers)], skip_invalid=True
    )
    by_index = {int(p.id): list(p.chosen) for p in encoded}
    return [by_index.get(j) for j in range(len(answers))]


def rate_and_store(
    store: PreferenceStore,
    judge: Judge,
    prompt: Messages,
    answers: list[str],
    tokens: list[list[int] | None] | None,
    *,
    sampler: str,
    version: str,
    online: PromptRef | None = None,
) -> str:
    """Reward one prompt's answers and commit them as a rated group (with its prompt-file place); returns "pairs"
    for a group whose rewards differ (it trains) and "ties" for one whose rewards are all equal (dropped)."""
    rewards, _note = group_rewards(judge, prompt, answers)
    group = store.ratings.add_group(
        prompt, answers, rewards, rater=judge.name, version=version, sampler=sampler, tokens=tokens, online=online
    )
    return "pairs" if group.varied else "ties"
