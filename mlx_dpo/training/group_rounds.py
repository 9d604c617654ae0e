"""What a round with `method="grpo"` does differently from a DPO round (mlx_dpo.training.rounds keeps the rest:
versions, the held-out check, the accept/reject rule, the record).

It trains the store's rated groups no kept round has trained (mlx_dpo.data.rating_records: a judge's rewards from
online rounds, or a person's ratings from the app) instead of its pairs, with training/grpo.py; the round's record
lists the rated answers it trained (`round_ratings`), so a rejected round's groups wait for the next one, as pairs
do.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

from mlx_dpo.data.rating_records import RatedGroup
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Status
from mlx_dpo.group_settings import GroupSettings
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.models.session import ModelSession
from mlx_dpo.options import build
from mlx_dpo.settings import ONLINE_SAMPLING, LoraSettings, RoundSettings, TrainingArgs
from mlx_dpo.training import grpo


def is_grpo(settings: dict) -> bool:
    return settings.get("method") == "grpo"


def untrained_groups(store: PreferenceStore) -> list[RatedGroup]:
    """The rated groups a GRPO round trains: every group no kept round has trained. MlxDpoError when there is none
    whose rewards differ (a group of equal rewards teaches nothing)."""
    groups = store.ratings.untrained()
    if not any(g.varied for g in groups):
        raise MlxDpoError(
            "no rated group to train on: rate a prompt's answers differently first"
            + (f" ({len(groups)} untrained group(s) have equal ratings)" if groups else "")
        )
    return groups


def round_steps(groups: list[RatedGroup], settings: dict) -> int:
    """The round's optimizer steps when `iters` is not given: `passes` over its groups whose rewards differ, in
    batches of `batch_size` groups, μ steps a batch, kept within [min_steps, max_steps] as a DPO round's are."""
    rounds, args = build(RoundSettings, settings), build(TrainingArgs, settings)
    steps = math.ceil(rounds.passes * math.ceil(sum(g.varied for g in groups) / args.batch_size))
    steps *= build(GroupSettings, settings).grpo_iterations
    return max(rounds.min_steps, min(rounds.max_steps, steps))


def train(
    groups: list[RatedGroup],
    *,
    loaded: ModelSession,
    adapter_path: Path,
    init_adapter: str | Path | None,
    reference: str,
    recorded: dict,
    sample_settings: SampleSettings | None,
    on_event: Callable[[Event], None],
    cancel: threading.Event | None,
    **options,
):
    """Train round `adapter_path` on `groups` (grpo.train_groups) with the round's `options` (its run's, by setting
    name) and `recorded` settings (GroupSettings' among them); returns its run.TrainResult."""
    group = build(GroupSettings, recorded)
    args = build(TrainingArgs, options)
    on_event(
        Status(
            f"GRPO round: {sum(g.varied for g in groups)} group(s) of {len(groups)} with differing rewards, "
            f"{args.iters} step(s), advantages by {group.grpo_advantage}, normalised per {group.grpo_normalize}"
            + (
                f", KL β {group.grpo_beta:g} to {'the start' if reference == 'start' else 'the base'}"
                if group.grpo_beta > 0
                else ", no reference"
            )
        )
    )
    data = [grpo.Group(g.prompt, g.answers, g.rewards, [r.tokens for r in g.ratings]) for g in groups]
    return grpo.train_groups(
        data,
        loaded=loaded,
        adapter_dir=Path(adapter_path),
        init_adapter=init_adapter,
        args=args,
        lora=build(LoraSettings, options),
        group=group,
        max_tokens=(sample_settings or ONLINE_SAMPLING).max_tokens,
        reference=reference,
        on_event=on_event,
        cancel=cancel,
    )
