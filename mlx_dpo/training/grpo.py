"""A GRPO round's training: groups of answers with rewards -> group-relative advantages -> the clipped objective on
the answers' tokens (grpo_loss.py) -> AdamW on the adapter.

    result = train_groups(groups, loaded=session, adapter_dir=Path("ws/adapters/v3"), init_adapter="ws/adapters/v2",
                          args=TrainingArgs(learning_rate=2e-5), lora=LoraSettings(),
                          group=GroupSettings(method="grpo"), max_tokens=96)

Read top to bottom: tokenize each answer as DPO does (training/tokens.py's one rule, so a finished answer ends with
its end-of-turn token and a cut one has none), drop the groups whose rewards are all equal, then two passes that
do not train: the reference's summed log-probs (only with grpo_beta > 0, through the disk cache DPO uses, keyed the
same way; with β = 0 no reference runs and no cache opens) and the old policy's token log-probs (the version the
round starts from, which sampled the groups: every ratio is measured against it, as PPO's old policy). Then the
loop: the groups shuffled by the seed, `batch_size` groups per batch, `grpo_iterations` (μ) optimizer steps on each
batch. The old log-probs are the model's own at temperature 1 (TRL divides by the sampling temperature; we keep
the model's distribution, which is what the ratio's policy is).

The adapter is saved with a checkpoint (its AdamW moments), so the next round, DPO or GRPO, continues them.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Cancelled, CheckpointSaved, Event, Finished, Status, StepMetrics
from mlx_dpo.group_settings import GroupSettings
from mlx_dpo.metric_names import LEARNING_RATE, LOSS, TOKENS_PER_SECOND
from mlx_dpo.models.adapter import adapter_config, adapter_weights
from mlx_dpo.models.session import ModelSession
from mlx_dpo.settings import LoraSettings, TrainingArgs
from mlx_dpo.training import checkpoint
from mlx_dpo.training.batching import make_batch
from mlx_dpo.training.grpo_loss import group_advantages, grpo_loss
from mlx_dpo.training.logprobs import token_logps
from mlx_dpo.training.ref_cache import RefCache, arrays_digest
from mlx_dpo.training.reference import ReferenceStats, reference_logps
from mlx_dpo.training.run import TrainResult, model_fingerprint
from mlx_dpo.training.tokens import EncodedPair, Encoder, token_limits
from mlx_dpo.training.trainer import make_optimizer


@dataclass(frozen=True)
class Group:
    """One prompt's answers and their rewards; `tokens[j]`: answer j's token ids as stored (None: from its text)."""

    prompt: list[dict]
    answers: list[str]
    rewards: list[float]
    tokens: list[list[int] | None] | None = None


@dataclass(frozen=True)
class _Answer:
    """One answer as it trains: its prompt's and its own token ids, its advantage, its reference log-prob."""

    prompt: tuple[int, ...]
    completion: tuple[int, ...]
    advantage: float
    pair: EncodedPair  # the answer as a (answer, answer) pair: the reference cache's key (its prompt, its tokens)


def encode_groups(
    loaded: ModelSession, groups: Sequence[Group], scale: str, emit: Callable[[Event], None]
) -> list[list[_Answer]]:
    """The groups that train, as token ids with advantages: those whose rewards differ, each answer tokenized as a
    DPO completion (an answer the template cannot hold is left out, and its group with it if fewer than two stay)."""
    limits = token_limits(loaded.config, None, None)
    encoder = Encoder(loaded.tokenizer, max_length=limits.max_length, max_prompt_length=limits.max_prompt_length)
    out, equal, unusable = [], 0, 0
    for g, group in enumerate(groups):
        encoded, problems = encoder.encode_all(
            [PreferencePair(f"{g}:{j}", group.prompt, a, a) for j, a in enumerate(group.answers)], skip_invalid=True
        )
        kept = [int(p.id.split(":")[1]) for p in encoded]
        rewards = [group.rewards[j] for j in kept]
        if len(kept) < 2:
            unusable += 1
            continue
        if len(set(rewards)) < 2:
            equal += 1
            continue
        advantages = group_advantages(mx.array([rewards], dtype=mx.float32), scale).tolist()[0]
        stored = group.tokens or [None] * len(group.answers)
        out.append(
            [
                _Answer(
                    p.prompt,
                    tuple(stored[j]) if stored[j] else p.chosen,
                    a,
                    EncodedPair(
                        p.id,
                        p.prompt,
                        tuple(stored[j]) if stored[j] else p.chosen,
                        tuple(stored[j]) if stored[j] else p.chosen,
                    ),
                )
                for j, p, a in zip(kept, encoded, advantages)
            ]
        )
    if equal or unusable:
        emit(
            Status(
                f"{equal} group(s) with equal rewards dropped (they teach nothing)"
                + (f", {unusable} with fewer than two usable answers" if unusable else "")
            )
        )
    return out


def _reference(
    loaded: ModelSession, groups: list[list[_Answer]], start: str | Path | None, emit: Callable[[Event], None]
) -> tuple[dict[EncodedPair, float], ReferenceStats]:
    """Each answer's summed reference log-prob, cache misses only (the reference: the model with `start` on)."""
    pairs = [a.pair for group in groups for a in group]
    with loaded.adapter(start) as session:
        digest = arrays_digest(adapter_weights(session.model)) if start else None
        cache = RefCache(model_fingerprint(session, digest))
        try:
            ref, stats = reference_logps(session.model, pairs, cache, on_event=emit, checks=session.checks)
        finally:
            cache.close()
    return {p: ref.values[p][0] for p in pairs}, stats


def _old_logps(
    loaded: ModelSession, groups: list[list[_Answer]], start: str | Path | None, batch: int
) -> dict[int, np.ndarray]:
    """Each answer's token log-probs under the version the round starts from (by id of the _Answer)."""
    answers = [a for group in groups for a in group]
    out = {}
    with loaded.adapter(start) as session:
        for s in range(0, len(answers), batch):
            chunk = answers[s : s + batch]
            b = make_batch([(a.prompt, a.completion) for a in chunk])
            values = np.array(token_logps(session.model, b))
            for a, row in zip(chunk, values):
                out[id(a)] = row[: len(a.completion)]
    return out


def _batch_arrays(answers: list[_Answer], old: dict[int, np.ndarray], ref: dict[EncodedPair, float] | None):
    batch = make_batch([(a.prompt, a.completion) for a in answers])
    width = batch.targets.shape[1]
    old_rows = np.zeros((len(answers), width), dtype=np.float32)
    for i, a in enumerate(answers):
        old_rows[i, : len(a.completion)] = old[id(a)]
    adv = mx.array([a.advantage for a in answers], dtype=mx.float32)
    ref_row = mx.array([ref[a.pair] for a in answers], dtype=mx.float32) if ref is not None else None
    return batch, mx.array(old_rows), adv, ref_row


def train_groups(
    groups: Sequence[Group],
    *,
    loaded: ModelSession,
    adapter_dir: Path,
    init_adapter: str | Path | None,
    args: TrainingArgs,
    lora: LoraSettings,
    group: GroupSettings,
    max_tokens: int,
    reference: str = "base",
    on_event: Callable[[Event], None] | None = None,
    cancel: threading.Event | None = None,
):
    """Train the adapter on `groups` (the module docstring says how); returns a run.TrainResult. `reference` is
    "base" or "start" (the starting version) for the KL term; `max_tokens` is Dr. GRPO's constant."""
    emit = on_event or (lambda e: None)
    encoded = encode_groups(loaded, groups, group.grpo_advantage, emit)
    if not encoded:
        raise MlxDpoError("no group of answers with differing rewards to train on")
    ref, stats = (None, ReferenceStats())
    if group.grpo_beta > 0:
        ref, stats = _reference(loaded, encoded, init_adapter if reference == "start" else None, emit)
    per_batch = args.batch_size * max(len(g) for g in encoded)
    old = _old_logps(loaded, encoded, init_adapter, per_batch)
    if not init_adapter:
        mx.random.seed(args.seed)  # LoRA's A matrices start random: from the run's seed
    settings = loaded.train_adapter(init_adapter, lora)
    steps = args.iters or math.ceil(len(encoded) / args.batch_size) * group.grpo_iterations
    optimizer = make_optimizer(args, steps)
    start_checkpoint = checkpoint.latest(Path(init_adapter)) if init_adapter else None
    if start_checkpoint is not None:
        checkpoint.restore_moments(start_checkpoint, optimizer)
    config = adapter_config(
        settings,
        loaded.model,
        loaded.name,
        extra={
            "method": "grpo",
            "init_adapter": str(init_adapter) if init_adapter else None,
            "reference": reference,
            "num_groups": len(encoded),
            **asdict(group),
        },
    )
    try:
        last = _loop(loaded.model, encoded, old, ref, args, group, max_tokens, optimizer, steps, emit, cancel)
    except BaseException:
        loaded.drop_training()
        raise
    if last is None:
        loaded.drop_training()
        emit(Cancelled(step=0, adapter_path=str(adapter_dir)))
        return TrainResult(adapter_dir, {}, {}, stats, cancelled=True)
    last.update({"ref_pass_seconds": round(stats.seconds, 3), "groups": len(encoded)})
    path = checkpoint.save(adapter_dir, steps, loaded.model, optimizer, config, {"args": asdict(args)})
    emit(CheckpointSaved(step=steps, path=str(path)))
    loaded.trained(adapter_dir)
    emit(Finished(adapter_path=str(adapter_dir), metrics=last))
    return TrainResult(adapter_dir, last, {}, stats)


def _loop(
    model: nn.Module,
    encoded: list[list[_Answer]],
    old: dict[int, np.ndarray],
    ref,
    args: TrainingArgs,
    group: GroupSettings,
    max_tokens: int,
    optimizer: optim.Optimizer,
    steps: int,
    emit: Callable[[Event], None],
    cancel: threading.Event | None,
) -> dict | None:
    """The optimizer steps; the last step's metrics, or None when cancelled."""

    def batches():  # each pass over the groups in its own seeded order, forever: the steps decide when to stop
        for epoch in itertools.count():
            order = np.random.default_rng([args.seed, epoch]).permutation(len(encoded))
            for s in range(0, len(order), args.batch_size):
                yield [a for g in order[s : s + args.batch_size] for a in encoded[g]]

    def loss_fn(batch, old_rows, adv, ref_row):
        return grpo_loss(
            token_logps(model, batch),
            old_rows,
            adv,
            batch.mask,
            epsilon=group.grpo_epsilon,
            epsilon_high=group.grpo_epsilon_high,
            normalize=group.grpo_normalize,
            max_tokens=max_tokens,
            beta=group.grpo_beta,
            ref_logps=ref_row,
        )

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    model.train()
    step, last = 0, {}
    for answers in batches():
        arrays = _batch_arrays(answers, old, ref)
        for _ in range(min(group.grpo_iterations, steps - step)):
            if cancel is not None and cancel.is_set():
                model.eval()
                return None
            step += 1
            start = time.perf_counter()
            (loss, metrics), grads = loss_and_grad(*arrays)
            if args.max_grad_norm:
                grads, _ = optim.clip_grad_norm(grads, args.max_grad_norm)
            optimizer.update(model, grads)
            mx.eval(model.trainable_parameters(), optimizer.state, loss, metrics)
            seconds = time.perf_counter() - start
            last = {
                "step": step,
                LOSS: loss.item(),
                **{k: v.item() for k, v in metrics.items()},
                "advantage_abs": float(mx.abs(arrays[2]).mean().item()),
                "answers": len(answers),
                LEARNING_RATE: float(optimizer.learning_rate.item()),
                "seconds": seconds,
                # The tokens run through the model, each answer with its prompt (DPO's count: trainer.MetricWindow).
                TOKENS_PER_SECOND: sum(len(a.prompt) + len(a.completion) - 1 for a in answers) / seconds,
            }
            emit(StepMetrics(step=step, total_steps=steps, metrics=last))
        if step >= steps:
            break
    model.eval()
    return last
