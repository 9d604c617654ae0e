"""Label review: the stored pairs a trained adapter disagrees with most, the likely mislabels.

    report = review_pairs("my-workspace")            # the latest finished round's adapter
    for item in report.items[:10]: print(item.pair_id, item.margin)

Each pair is scored with DPO's implicit reward, β·(log π(answer) − log π_ref(answer)), for its chosen and its
rejected answer: policy = base + adapter, reference = the base model (the reference every round trains
against, so its log-probs come from the same reference cache and are rarely recomputed). The margin
chosen − rejected is what training pushes up; a pair whose margin stays far below zero after training is one
the rest of the data taught the model to judge the other way: the rejected answer looks like the pairs'
chosen ones. Items are sorted most negative margin first. The reference is the base even for an adapter
that trained against another one (a round with reference "previous", `train --init-adapter`): the review
measures what all its training together taught, which is what a mislabel distorts.

The scoring is the one evaluation loop (trainer.evaluate_batches, whose rewards come from
losses.implicit_rewards); contradictions between labels come from mlx_dpo.data.contradictions, with no model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlx_dpo.data.contradictions import Contradiction, find_contradictions
from mlx_dpo.data.records import Split, StoredPair
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Status
from mlx_dpo.metric_names import REWARD_CHOSEN, REWARD_REJECTED
from mlx_dpo.models.adapter import read_adapter_config
from mlx_dpo.models.load import load_model
from mlx_dpo.models.session import ModelSession
from mlx_dpo.settings import RunOptions, TrainingArgs
from mlx_dpo.training.ref_cache import RefCache
from mlx_dpo.training.reference import reference_logps
from mlx_dpo.training.run import model_fingerprint
from mlx_dpo.training.tokens import EncodedPair, Encoder, token_limits
from mlx_dpo.training.trainer import evaluate_batches

REVIEW_BATCH_SIZE = 4  # pairs per forward pass
DEFAULT_BETA = TrainingArgs.beta  # for an adapter whose config does not say what it trained with


@dataclass(frozen=True)
class ReviewItem:
    pair_id: int
    margin: float  # chosen_reward - rejected_reward: below zero, the trained model prefers the rejected answer
    chosen_reward: float
    rejected_reward: float
    split: str


@dataclass
class ReviewReport:
    adapter_path: Path | None  # None: the workspace has no finished round yet, so only contradictions
    version: str | None  # "v3" when the adapter is a round's
    beta: float
    items: list[ReviewItem] = field(default_factory=list)  # most disagreement (lowest margin) first
    contradictions: list[Contradiction] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (pair id, why) for pairs that could not be scored


def review_pairs(
    workspace: str | Path,
    *,
    adapter_path: str | Path | None = None,
    model: str | None = None,
    loaded: ModelSession | None = None,
    on_event: Callable[[Event], None] | None = None,
    split: Split | None = None,
) -> ReviewReport:
    """Score every stored pair (or one `split`'s) under `adapter_path` (default: the latest finished round's).

    `model` defaults to the one the round trained on. `loaded`, if given, is a session of that base model (the
    base alone is the reference; the adapter on it before is on it after).
    """
    emit = on_event or (lambda e: None)
    with PreferenceStore(workspace, create=False) as store:
        pairs = store.list_pairs(split=split)[::-1]  # oldest first
        latest = store.latest_finished_round() if adapter_path is None else None
    contradictions = find_contradictions(pairs)
    version, trained_with = None, {}
    if adapter_path is None:
        if latest is None:
            return ReviewReport(None, None, DEFAULT_BETA, contradictions=contradictions)
        adapter_path, version, trained_with = Path(latest.adapter_path), latest.label, latest.settings
        model = model if model is not None else latest.settings.get("model")
    adapter_path = Path(adapter_path)
    beta = float(read_adapter_config(adapter_path).get("mlx_dpo", {}).get("beta") or DEFAULT_BETA)
    if loaded is None:
        emit(Status("loading model"))
        loaded = load_model(model, chat_template=trained_with.get("chat_template"))
    # Pairs cut as the round's training cut them (its --max-length, else the defaults): scored as it saw them.
    limits = token_limits(
        loaded.config,
        trained_with.get("max_length", RunOptions.max_length),
        trained_with.get("max_prompt_length", RunOptions.max_prompt_length),
    )
    encoded, scored, skipped = _encode(
        Encoder(loaded.tokenizer, max_length=limits.max_length, max_prompt_length=limits.max_prompt_length), pairs
    )
    report = ReviewReport(adapter_path, version, beta, contradictions=contradictions, skipped=skipped)
    if encoded:
        report.items = _score(loaded, adapter_path, beta, encoded, scored, emit)
    return report


def _encode(encoder: Encoder, pairs: list[StoredPair]) -> tuple[list[EncodedPair], list[StoredPair], list]:
    """The pairs as the model reads them; a pair the encoder refuses (a prompt too long) is skipped with why."""
    encoded, scored, skipped = [], [], []
    for p in pairs:
        try:
            encoded.append(encoder.encode(p.to_preference_pair()))
            scored.append(p)
        except MlxDpoError as e:
            skipped.append((p.id, str(e)))
    return encoded, scored, skipped


def _score(
    loaded: ModelSession,
    adapter_path: Path,
    beta: float,
    encoded: list[EncodedPair],
    pairs: list[StoredPair],
    emit: Callable[[Event], None],
) -> list[ReviewItem]:
    """Reference log-probs from the base (through the cache), then the adapter's rewards, worst margin first."""
    with loaded.base():
        cache = RefCache(model_fingerprint(loaded))  # the base's: the reference every round trains against
        try:
            ref, _ = reference_logps(
                loaded.model, encoded, cache, batch_size=2 * REVIEW_BATCH_SIZE, on_event=emit, checks=loaded.checks
            )
        finally:
            cache.close()
    args = TrainingArgs(beta=beta, loss_type="sigmoid", batch_size=REVIEW_BATCH_SIZE)
    rewards: list[tuple[float, float]] = []
    with loaded.adapter(adapter_path):
        for _, _, metrics in evaluate_batches(loaded.model, args, encoded, ref, emit, loaded.checks):
            rewards += zip(metrics[REWARD_CHOSEN].tolist(), metrics[REWARD_REJECTED].tolist())
            emit(Status("reviewing pairs", done=len(rewards), total=len(encoded)))
    items = [ReviewItem(p.id, c - r, c, r, p.split) for p, (c, r) in zip(pairs, rewards)]
    return sorted(items, key=lambda item: (item.margin, item.pair_id))
