"""A person's ratings as the other methods' labels: DPO pairs (best against worst) and KTO's good and bad answers.

    pairs = rating_pairs(store.ratings.groups(rater="human"))          # one per group whose ratings differ
    marked = rating_feedback(store.ratings.groups(rater="human"), 4)   # rated 4 or 5: good; 1 to 3: bad

- DPO: a group gives one pair, its best-rated answer chosen over its worst-rated one, when they differ (equal
  ratings give nothing). Among equal best (or worst) ratings the earliest answer is taken, as the online pairing
  breaks ties. A person's rating is theirs: an answer cut at max tokens may be preferred (the finished-answer rule
  binds program judges only, mlx_dpo.online.verdict).
- KTO: every rated answer, good when its rating is at least `good_rating` (GroupSettings.good_rating, set by the
  person), bad below it.

`add_rating_labels` puts them in the store, so the next DPO round (pairs) or KTO round (pairs and marked answers)
trains them like any other label; adding again adds nothing twice (pairs by content, answers by prompt, text and
label). The pair's id (`external_id`) is "rating-<group key>".
"""

from __future__ import annotations

from collections.abc import Iterable

from mlx_dpo.data.feedback import Feedback
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.data.rating_records import HUMAN, RatedGroup
from mlx_dpo.data.records import ImportResult
from mlx_dpo.data.store import PreferenceStore


def best_against_worst(group: RatedGroup) -> tuple[int, int] | None:
    """(index of the best-rated answer, of the worst-rated), earliest among equals; None when all are equal."""
    rewards = group.rewards
    best, worst = rewards.index(max(rewards)), rewards.index(min(rewards))
    return None if rewards[best] == rewards[worst] else (best, worst)


def rating_pairs(groups: Iterable[RatedGroup]) -> list[PreferencePair]:
    """One pair per group whose ratings differ: its best answer chosen over its worst."""
    pairs = []
    for group in groups:
        found = best_against_worst(group)
        if found is not None:
            pairs.append(
                PreferencePair(f"rating-{group.key}", group.prompt, group.answers[found[0]], group.answers[found[1]])
            )
    return pairs


def rating_feedback(groups: Iterable[RatedGroup], good_rating: float) -> list[Feedback]:
    """Every rated answer marked good (rating >= `good_rating`) or bad."""
    return [
        Feedback(f"rating-{r.id}", group.prompt, r.answer, r.reward >= good_rating)
        for group in groups
        for r in group.ratings
    ]


def add_rating_labels(store: PreferenceStore, good_rating: float) -> tuple[ImportResult, ImportResult]:
    """A person's ratings into the store as pairs and as answers marked good or bad: (pairs added, answers added)."""
    groups = store.ratings.groups(rater=HUMAN)
    return (
        store.import_pairs(rating_pairs(groups)),
        store.import_feedback(rating_feedback(groups, good_rating), source="ratings"),
    )
