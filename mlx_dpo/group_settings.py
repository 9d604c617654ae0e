"""The settings of group rounds (GRPO, mlx_dpo.training.grpo) and of a person's ratings, declared as
mlx_dpo.settings declares every other setting: one name, default, help text and check per field.

`method` picks what a round trains: "dpo" (the default: stored pairs, a score judge's best against its worst) or
"grpo" (groups of answers to one prompt with a reward each: a score judge's scores, a prefer judge's wins in a
round-robin, or a person's ratings). The grpo_* settings are the objective's (training/grpo_loss.py has the
formulas); TRL's GRPOConfig names in brackets. No mlx import: the app's UI process reads these too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mlx_dpo.options import OneOf, at_least, check_fields, option, positive, rule

METHODS = ("dpo", "grpo")
ADVANTAGES = ("std", "mean")  # the same names as training/grpo_loss.py's (it imports mlx; this module may not)
NORMALISATIONS = ("sequence", "token", "constant")
RATING_SCALE = (1, 5)  # a person's rating: 1 (worst) to 5 (best); "good" is stored as 5 and "bad" as 1


@dataclass
class GroupSettings:
    """How a round trains: DPO on pairs, or GRPO on groups of rated answers."""

    TITLE: ClassVar[str] = "group rounds (GRPO)"

    method: str = option(
        "dpo",
        "what a round trains: dpo (pairs) or grpo (groups of answers with a reward each)",
        check=OneOf(METHODS, "method"),
    )
    grpo_epsilon: float = option(
        0.2,
        "GRPO's clip range: the ratio is clipped to [1 - eps, 1 + eps] [epsilon]",
        check=rule(lambda e: 0 < e < 1, "must be in (0, 1)"),
    )
    grpo_epsilon_high: float | None = option(
        None, "upper clip 1 + this (DAPO's clip-higher) [epsilon_high]", check=positive(), default_text="--grpo-epsilon"
    )
    grpo_iterations: int = option(1, "optimizer steps on each batch of groups (mu) [num_iterations]", check=at_least(1))
    grpo_normalize: str = option(
        "sequence",
        "loss normalisation: sequence (GRPO), token (DAPO) or constant (Dr. GRPO: by max tokens) [loss_type]",
        check=OneOf(NORMALISATIONS, "normalisation"),
    )
    grpo_advantage: str = option(
        "std",
        "advantages: std ((r - mean) / std) or mean (r - mean, Dr. GRPO) [scale_rewards]",
        check=OneOf(ADVANTAGES, "advantage"),
    )
    grpo_beta: float = option(0.0, "KL to the reference; 0: no reference pass and no cache [beta]", check=at_least(0))
    good_rating: int = option(
        4,
        "ratings at or above it are good answers for KTO, below it bad",
        check=rule(lambda r: RATING_SCALE[0] < r <= RATING_SCALE[1], "must be between 2 and 5"),
    )

    def __post_init__(self) -> None:
        check_fields(self)
