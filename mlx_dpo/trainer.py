"""The DPO training loop: batches of pairs, policy log-probs, preference loss, AdamW on the adapter.

Reference log-probs come in precomputed (see `reference.py`); the loop never runs the reference.
Events (`events.py`) report progress; a `threading.Event` cancels between steps.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map

from mlx_dpo import checkpoint
from mlx_dpo.events import Cancelled, CheckpointSaved, Event, EvalMetrics, StepMetrics
from mlx_dpo.logprobs import pair_batch, pair_logps_from_arrays
from mlx_dpo.losses import implicit_rewards, preference_loss, rpo_nll, simpo_rewards
from mlx_dpo.tokens import EncodedPair


@dataclass
class TrainingArgs:
    iters: int | None = None  # optimizer steps; when unset, `epochs` decides
    epochs: float = 1.0
    batch_size: int = 4  # pairs per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 5e-5
    lr_schedule: str = "cosine"  # or "constant"; both after a linear warm-up
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0
    simpo_gamma: float = 0.5
    seed: int = 0
    steps_per_report: int = 10
    steps_per_eval: int = 50
    save_every: int = 100
    grad_checkpoint: bool = False
    shared_prompt: bool = True  # run each prompt once under both completions
    full_logits: bool = False  # project every position onto the vocabulary (the plain path)
    compile: bool = True  # mx.compile the loss and gradient


@dataclass
class RefLogps:
    """Reference summed log-probs (chosen, rejected) per encoded pair."""

    values: dict[EncodedPair, tuple[float, float]]

    def batch(self, pairs: list[EncodedPair]) -> tuple[mx.array, mx.array]:
        chosen = mx.array([self.values[p][0] for p in pairs], dtype=mx.float32)
        rejected = mx.array([self.values[p][1] for p in pairs], dtype=mx.float32)
        return chosen, rejected


def epoch_batches(pairs: list[EncodedPair], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: shuffled, grouped by length inside windows so padding stays small."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(pairs))
    window = batch_size * 16
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: pairs[i].num_tokens)
        batches += [[int(i) for i in chunk[s : s + batch_size]] for s in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def total_steps(args: TrainingArgs, num_pairs: int) -> int:
    if args.iters:
        return args.iters
    per_epoch = math.ceil(num_pairs / args.batch_size)
    return max(1, math.ceil(args.epochs * per_epoch / args.grad_accum))


def make_optimizer(args: TrainingArgs, steps: int) -> optim.Optimizer:
    warmup = min(args.warmup_steps, steps)
    if args.lr_schedule == "cosine":
        main = optim.cosine_decay(args.learning_rate, max(1, steps - warmup), args.learning_rate * 0.1)
    else:
        main = lambda _: mx.array(args.learning_rate)  # noqa: E731
    schedule = main
    if warmup:
        schedule = optim.join_schedules([optim.linear_schedule(0.0, args.learning_rate, warmup), main], [warmup])
    return optim.AdamW(learning_rate=schedule, weight_decay=args.weight_decay)


def pair_batch_metrics(args: TrainingArgs, pc, pr, rc, rr, lc, lr_) -> dict[str, mx.array]:
    """TRL-named per-pair quantities (implicit rewards, accuracies, policy log-probs)."""
    if args.loss_type == "simpo":
        chosen_r, rejected_r = simpo_rewards(pc, lc, args.beta), simpo_rewards(pr, lr_, args.beta)
    else:
        chosen_r, rejected_r = implicit_rewards(pc, rc, args.beta), implicit_rewards(pr, rr, args.beta)
    return {
        "rewards/chosen": chosen_r,
        "rewards/rejected": rejected_r,
        "rewards/margins": chosen_r - rejected_r,
        "rewards/accuracies": (chosen_r > rejected_r).astype(mx.float32),
        "logps/chosen": pc,
        "logps/rejected": pr,
    }


def batch_inputs(args: TrainingArgs, pairs: list[EncodedPair], ref: RefLogps, model: nn.Module | None = None):
    """Host side of a step: the padded token arrays plus reference log-probs, and the pairs' token count."""
    arrays, _ = pair_batch(pairs, shared_prompt=args.shared_prompt, model=model)
    return (*arrays, *ref.batch(pairs)), sum(p.num_tokens for p in pairs)


def loss_on_arrays(model: nn.Module, args: TrainingArgs, *arrays: mx.array):
    """Mean loss over a batch and the per-pair metrics: pure array code, compilable."""
    *batch, rc, rr = arrays
    logps, lengths = pair_logps_from_arrays(model, batch, full_logits=args.full_logits)
    n = rc.shape[0]
    pc, pr = logps[:n], logps[n:]
    lc, lr_ = lengths[:n], lengths[n:]
    losses = preference_loss(
        pc, pr, rc, rr, loss_type=args.loss_type, beta=args.beta, label_smoothing=args.label_smoothing,
        chosen_lengths=lc, rejected_lengths=lr_, simpo_gamma=args.simpo_gamma,
    )
    if args.rpo_alpha:
        losses = losses + args.rpo_alpha * rpo_nll(pc, lc)
    metrics = pair_batch_metrics(args, pc, pr, rc, rr, lc, lr_)
    metrics["loss"] = losses
    return losses.mean(), metrics


def dpo_loss(model: nn.Module, args: TrainingArgs, pairs: list[EncodedPair], ref: RefLogps):
    """Mean loss over a batch of pairs, the per-pair metrics, and the number of tokens."""
    arrays, tokens = batch_inputs(args, pairs, ref, model)
    loss, metrics = loss_on_arrays(model, args, *arrays)
    return loss, metrics, tokens


def make_step(model: nn.Module, args: TrainingArgs) -> Callable:
    """`step(*arrays) -> ((loss, metrics), grads)`, compiled unless `args.compile` is off.

    Padding to a few lengths keeps the number of distinct shapes (and so of compilations) small.
    """
    loss_and_grad = nn.value_and_grad(model, lambda *a: loss_on_arrays(model, args, *a))
    if not args.compile:
        return loss_and_grad
    state = [model.state, mx.random.state]
    return mx.compile(loss_and_grad, inputs=state, outputs=state)


class MetricWindow:
    """Sums per-pair metrics between reports."""

    def __init__(self):
        self.sums: dict[str, mx.array] = {}  # kept on the device; read back only when reported
        self.pairs = 0
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, metrics: dict[str, mx.array], tokens: int) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v.sum() if k in self.sums else v.sum()
        self.pairs += int(next(iter(metrics.values())).shape[0])
        self.tokens += tokens

    def means(self) -> dict[str, float]:
        return {k: float(v.item()) / max(self.pairs, 1) for k, v in self.sums.items()}


def evaluate_pairs(model: nn.Module, args: TrainingArgs, pairs: list[EncodedPair], ref: RefLogps) -> dict[str, float]:
    """Mean loss and reward metrics over `pairs`, without gradients."""
    window = MetricWindow()
    for s in range(0, len(pairs), args.batch_size):
        _, metrics, tokens = dpo_loss(model, args, pairs[s : s + args.batch_size], ref)
        mx.eval(metrics)
        window.add(metrics, tokens)
    return window.means()


def train_loop(
    model: nn.Module,
    args: TrainingArgs,
    train_pairs: list[EncodedPair],
    ref: RefLogps,
    adapter_dir: Path,
    adapter_config: dict,
    *,
    valid_pairs: list[EncodedPair] | None = None,
    resume_from: Path | None = None,
    optimizer_from: Path | None = None,
    on_event: Callable[[Event], None] = lambda e: None,
    cancel: threading.Event | None = None,
    run_info: Callable[[], dict] = dict,
) -> dict[str, float]:
    """Train the adapter on `model` in place; returns the last reported metrics."""
    steps = total_steps(args, len(train_pairs))
    optimizer = make_optimizer(args, steps)
    if args.grad_checkpoint:
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])
    start_step = 0
    if resume_from is not None:
        start_step = checkpoint.restore(resume_from, model, optimizer)
    elif optimizer_from is not None:
        checkpoint.restore_moments(optimizer_from, optimizer)
    model.train()
    step_fn = make_step(model, args)

    order: dict[int, list[list[int]]] = {}  # one epoch's batches, computed once per epoch

    def batches_of(epoch: int) -> list[list[int]]:
        if epoch not in order:
            order.clear()
            order[epoch] = epoch_batches(train_pairs, args.batch_size, args.seed, epoch)
        return order[epoch]

    batches_per_epoch = len(batches_of(0))
    window, last = MetricWindow(), {}
    for step in range(start_step + 1, steps + 1):
        if cancel is not None and cancel.is_set():
            on_event(Cancelled(step=step - 1, adapter_path=str(adapter_dir)))
            model.eval()
            return last
        mx.random.seed(args.seed * 1_000_003 + step)  # dropout noise is a function of (seed, step): resumable
        grads = None
        for micro in range(args.grad_accum):
            index = (step - 1) * args.grad_accum + micro
            epoch, i = divmod(index, batches_per_epoch)
            batch = [train_pairs[j] for j in batches_of(epoch)[i]]
            arrays, tokens = batch_inputs(args, batch, ref, model)
            (_, metrics), g = step_fn(*arrays)
            grads = g if grads is None else tree_map(mx.add, grads, g)
            window.add(metrics, tokens)
            if args.grad_accum > 1:
                mx.eval(grads, window.sums)  # bound memory: free this micro-batch's activations
        if args.grad_accum > 1:
            grads = tree_map(lambda g: g / args.grad_accum, grads)
        if args.max_grad_norm:
            grads, _ = optim.clip_grad_norm(grads, args.max_grad_norm)
        optimizer.update(model, grads)
        mx.eval(model.trainable_parameters(), optimizer.state, window.sums)

        if step % args.steps_per_report == 0 or step == steps:
            elapsed = time.perf_counter() - window.start
            last = {
                "step": step,
                "epoch": round(((step - 1) * args.grad_accum + args.grad_accum) / batches_per_epoch, 3),
                **window.means(),
                "learning_rate": float(optimizer.learning_rate.item()),
                "tokens_per_second": window.tokens / max(elapsed, 1e-9),
                "peak_memory_gb": mx.get_peak_memory() / 1e9,
                **run_info(),
            }
            on_event(StepMetrics(step=step, total_steps=steps, metrics=last))
            window = MetricWindow()
        if valid_pairs and (step % args.steps_per_eval == 0 or step == steps):
            model.eval()
            ev = evaluate_pairs(model, args, valid_pairs, ref)
            model.train()
            on_event(EvalMetrics(step=step, metrics={"step": step, **{f"eval_{k}": v for k, v in ev.items()}}))
        if step % args.save_every == 0 or step == steps:
            path = checkpoint.save(adapter_dir, step, model, optimizer, adapter_config,
                                   {"args": asdict(args), "batches_per_epoch": batches_per_epoch,
                                    "epoch": epoch, "data_order": batches_of(epoch)})
            on_event(CheckpointSaved(step=step, path=str(path)))
    model.eval()
    return last
