"""What a run's method changes about its data and its reference pass, before training starts.

- KTO trains on single answers marked good or bad (data/feedback.py): they are read (or made from pairs)
  and laid out as pairs whose second answer is a mismatched one, for the KL reference point (methods.py).
- ORPO, SimPO and sft need no reference: no reference pass runs and no cache is opened.
- LD-DPO (ld_alpha) needs each completion's reference log-prob over its first min(L_c, L_r) tokens too:
  that is the log-prob of the completion cut to that length (the model is causal), so it comes from the
  same cache, keyed by tokens, as any other completion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import mlx.nn as nn

from mlx_dpo.data.feedback import Feedback, feedback_from_pairs, kto_pairs, load_feedback
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Status
from mlx_dpo.models.session import SelfChecks
from mlx_dpo.settings import TrainingArgs, needs_reference
from mlx_dpo.training.methods import ld_reference
from mlx_dpo.training.ref_cache import RefCache
from mlx_dpo.training.reference import ReferenceStats, RefLogps, reference_logps
from mlx_dpo.training.tokens import EncodedPair


def kto_data(
    source: str | Path | Sequence,
    args: TrainingArgs,
    skip_invalid: bool,
    emit: Callable[[Event], None],
    config: str | None = None,
    default_split: str = "train",
) -> tuple[list[PreferencePair], dict[str, bool]]:
    """A KTO run's data (a data file, folder or Hub dataset of feedback or pairs, or a list of Feedback /
    PreferencePair) in the pair layout, with each example's label by id."""
    if isinstance(source, (str, Path)):
        examples, skipped = load_feedback(source, skip_invalid=skip_invalid, config=config, default_split=default_split)
        if skipped:
            emit(Status(f"{source}: skipped {skipped} invalid row(s)"))
    else:
        source = list(source)
        examples = [x for x in source if isinstance(x, Feedback)] + feedback_from_pairs(
            [x for x in source if not isinstance(x, Feedback)]
        )
    if args.batch_size < 2:
        raise MlxDpoError(
            "--loss kto needs --batch-size of at least 2: its KL reference point comes from "
            "mismatched answers within the batch"
        )
    return kto_pairs(examples, args.batch_size)


def with_labels(encoded: list[EncodedPair], labels: dict[str, bool] | None) -> list[EncodedPair]:
    """KTO's labels on the encoded examples (EncodedPair.desirable); pairs unchanged."""
    if labels is None:
        return encoded
    return [dataclasses.replace(p, desirable=labels[p.id]) for p in encoded]


def _prefix_pair(p: EncodedPair) -> EncodedPair:
    k = min(len(p.chosen), len(p.rejected))
    return EncodedPair(p.id, p.prompt, p.chosen[:k], p.rejected[:k])


def method_reference(
    model: nn.Module,
    encoded: list[EncodedPair],
    open_cache: Callable[[], RefCache],
    args: TrainingArgs,
    *,
    batch_size: int,
    on_event: Callable[[Event], None],
    checks: SelfChecks | None = None,
) -> tuple[RefLogps, ReferenceStats]:
    """The reference log-probs the run's method reads: none for a reference-free method (no cache opened),
    LD-DPO's weighted ones with ld_alpha, else the plain reference pass (`checks`: the model session's record)."""
    if not needs_reference(args.loss_type):
        on_event(Status(f"no reference pass: {args.loss_type} is reference-free"))
        return RefLogps({p: (0.0, 0.0) for p in encoded}), ReferenceStats()
    cache = open_cache()
    on_event(Status("reference pass"))
    try:
        options = dict(
            batch_size=batch_size,
            shared_prompt=args.shared_prompt,
            full_logits=args.full_logits,
            pack=args.pack,
            on_event=on_event,
            checks=checks,
        )
        if args.ld_alpha is None:
            return reference_logps(model, encoded, cache, **options)
        prefixes = [_prefix_pair(p) for p in encoded]
        ref, stats = reference_logps(model, encoded + prefixes, cache, **options)
        values = {p: ld_reference(ref.values[p], ref.values[q], args.ld_alpha) for p, q in zip(encoded, prefixes)}
        return RefLogps(values), stats
    finally:
        cache.close()
