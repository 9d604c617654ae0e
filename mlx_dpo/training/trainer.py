"""The DPO training loop: batches of pairs, policy log-probs, preference loss, AdamW on the adapter.

Read top to bottom: the data order and schedule, the loss of one batch (`batch_loss`, named fields
of a `DpoBatch`), the step that compiles it for the run's one batch layout (`make_step`), the one
evaluation loop (`evaluate_batches`), and `train_loop`.

Reference log-probs come in precomputed (see `reference.py`); the loop never runs the reference.
Events (`events.py`) report progress; a `threading.Event` cancels between steps.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map

from mlx_dpo.compat import checkpoint_layers
from mlx_dpo.events import Cancelled, CheckpointSaved, EvalMetrics, Event, StepMetrics
from mlx_dpo.metric_names import EVAL, LEARNING_RATE, LOSS, PEAK_MEMORY_GB, TOKENS_PER_SECOND
from mlx_dpo.models.session import SelfChecks
from mlx_dpo.settings import TrainingArgs
from mlx_dpo.training import checkpoint, distributed, fast_path, pause
from mlx_dpo.training.batching import BatchLayout, DpoBatch, make_dpo_batch
from mlx_dpo.training.logprobs import pair_logps
from mlx_dpo.training.methods import method_losses
from mlx_dpo.training.ref_cache import arrays_digest
from mlx_dpo.training.reference import RefLogps
from mlx_dpo.training.tokens import EncodedPair


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


def batch_loss(
    model: nn.Module, args: TrainingArgs, batch: DpoBatch, mask_dims: int = 4
) -> tuple[mx.array, dict[str, mx.array]]:
    """Mean loss over a batch and the per-example metrics (methods.py): pure array code, compilable.
    `mask_dims`: the shared-prompt forward's mask layout on this model (fast_path.mask_dims)."""
    logps = pair_logps(
        model,
        batch.tokens,
        full_logits=args.full_logits,
        per_token=args.ld_alpha is not None,
        weighting=args.use_weighting,
        mask_dims=mask_dims,
    )
    losses, metrics = method_losses(args, logps, batch.ref_chosen, batch.ref_rejected, batch.desirable, logps.weights)
    metrics[LOSS] = losses
    return losses.mean(), metrics


@dataclass
class Step:
    """`step(batch) -> ((loss, metrics), grads)` for batches in the one layout the step was built for."""

    layout: BatchLayout
    # Takes a DpoBatch's arrays(): mx.compile (mlx 0.32) accepts trees of arrays and constants, not dataclasses.
    loss_and_grad: Callable

    def batch(self, pairs: list[EncodedPair], ref: RefLogps) -> DpoBatch:
        """The host side of a step: `pairs` packed in this step's layout, with their reference log-probs."""
        return make_dpo_batch(pairs, self.layout, ref.values)

    def __call__(self, batch: DpoBatch) -> tuple[tuple[mx.array, dict[str, mx.array]], dict]:
        if batch.layout is not self.layout:
            raise ValueError(f"a {batch.layout.name} batch given to a step built for {self.layout.name}")
        return self.loss_and_grad(*batch.arrays())


def make_step(
    model: nn.Module,
    args: TrainingArgs,
    on_event: Callable[[Event], None] | None = None,
    checks: SelfChecks | None = None,
) -> Step:
    """The training step of a run, compiled unless `args.compile` is off.

    The layout is decided here, once, from the settings and the model, after the self-check
    (fast_path.py; its findings kept in `checks`, the model session's record) has turned off any fast path
    that does not reproduce the model's own forward.
    Padding to a few lengths keeps the number of distinct shapes (and so of compilations) small.
    """
    checks = checks if checks is not None else SelfChecks()
    args = fast_path.checked_args(model, checks, args, on_event)
    layout, dims = fast_path.layout(model, checks, args)
    value_and_grad = nn.value_and_grad(
        model, lambda *arrays: batch_loss(model, args, DpoBatch.from_arrays(layout, arrays), dims)
    )
    names: list[str] = []

    def stacked(*arrays):
        # The metrics leave as one stacked array: mx.compile (mlx 0.32) fails ("_Map_base::at") when an output
        # of a compiled value_and_grad is itself a node of the loss graph (SimPO's, bco_pair's rewards are).
        (loss, metrics), grads = value_and_grad(*arrays)
        names[:] = list(metrics)
        return (loss, mx.stack([metrics[k] for k in names])), grads

    if args.compile:
        state = [model.state, mx.random.state]
        stacked = mx.compile(stacked, inputs=state, outputs=state)

    def loss_and_grad(*arrays):
        (loss, metrics), grads = stacked(*arrays)
        return (loss, dict(zip(names, metrics))), grads

    return Step(layout, loss_and_grad)


class MetricWindow:
    """Sums per-pair metrics between reports.

    A checkpoint taken mid-window keeps the window's sums (`state`, `restored`), so a resumed run reports
    the window that spans the restart over all its steps, as the uninterrupted run does.
    """

    def __init__(self):
        self.sums: dict[str, mx.array] = {}  # kept on the device; read back only when reported
        self.pairs = 0
        self.tokens = 0
        self.start = time.perf_counter()

    def state(self) -> dict:
        """The window so far as JSON, summed over every rank (a collective: every rank calls it).

        A float32 sum read back as a Python float is exact, so the restored window adds up bit for bit.
        """
        sums, (pairs, tokens) = distributed.group().sum_metrics(self.sums, [self.pairs, self.tokens])
        return {
            "sums": {k: float(v.item()) for k, v in sums.items()},
            "dtypes": {k: str(v.dtype).rpartition(".")[2] for k, v in sums.items()},
            "pairs": pairs,
            "tokens": tokens,
            "seconds": time.perf_counter() - self.start,
        }

    @classmethod
    def restored(cls, state: dict | None) -> MetricWindow:
        """The window a checkpoint kept (an empty one for checkpoints older than this field).

        Rank 0 alone takes the sums (they are every rank's), so the report's sum over ranks counts them once.
        """
        window = cls()
        if state and distributed.group().is_writer:
            dtypes = state.get("dtypes", {})
            window.sums = {
                k: mx.array(v, dtype=getattr(mx, dtypes.get(k, "float32"))) for k, v in state["sums"].items()
            }
            window.pairs, window.tokens = int(state["pairs"]), int(state["tokens"])
            window.start -= float(state.get("seconds", 0.0))
        return window

    def add(self, metrics: dict[str, mx.array], tokens: int) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v.sum() if k in self.sums else v.sum()
        self.pairs += int(next(iter(metrics.values())).shape[0])
        self.tokens += tokens

    def means(self) -> dict[str, float]:
        return {k: float(v.item()) / max(self.pairs, 1) for k, v in self.sums.items()}

    def across_ranks(self) -> MetricWindow:
        """This window summed over every rank of the group (itself on one rank): the global batch's metrics."""
        self.sums, (self.pairs, self.tokens) = distributed.group().sum_metrics(self.sums, [self.pairs, self.tokens])
        return self


def evaluate_batches(
    model: nn.Module,
    args: TrainingArgs,
    pairs: list[EncodedPair],
    ref: RefLogps,
    on_event: Callable[[Event], None] | None = None,
    checks: SelfChecks | None = None,
) -> Iterator[tuple[DpoBatch, list[EncodedPair], dict[str, mx.array]]]:
    """The one evaluation loop: `pairs` in order, `args.batch_size` at a time, without gradients.

    Yields each batch, its pairs and its evaluated per-pair metrics (see `batch_loss`). `checks`: the model
    session's record of the self-check (None: the check runs for this call).
    """
    checks = checks if checks is not None else SelfChecks()
    args = fast_path.checked_args(model, checks, args, on_event)
    layout, dims = fast_path.layout(model, checks, args)
    for s in range(0, len(pairs), args.batch_size):
        chunk = pairs[s : s + args.batch_size]
        batch = make_dpo_batch(chunk, layout, ref.values)
        _, metrics = batch_loss(model, args, batch, dims)
        mx.eval(metrics)
        yield batch, chunk, metrics


def evaluate_pairs(
    model: nn.Module, args: TrainingArgs, pairs: list[EncodedPair], ref: RefLogps, checks: SelfChecks | None = None
) -> dict[str, float]:
    """Mean loss and reward metrics over `pairs`, without gradients."""
    window = MetricWindow()
    for batch, _, metrics in evaluate_batches(model, args, pairs, ref, checks=checks):
        window.add(metrics, batch.num_tokens)
    return window.across_ranks().means()


class _DataOrder:
    """Which pairs each micro-batch holds: one epoch's shuffled batches at a time, computed once per epoch."""

    def __init__(self, pairs: list[EncodedPair], args: TrainingArgs):
        self.pairs, self.args = pairs, args
        self._epoch: int | None = None
        self._batches: list[list[int]] = []
        self.batches_per_epoch = len(self.batches(0))

    def batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(self.pairs, self.args.batch_size, self.args.seed, epoch)
        return self._batches

    def micro_batch(self, index: int) -> tuple[int, list[EncodedPair]]:
        """The epoch of the `index`-th micro-batch of the run, and its pairs."""
        epoch, i = divmod(index, self.batches_per_epoch)
        return epoch, [self.pairs[j] for j in self.batches(epoch)[i]]


def _prepare(
    model: nn.Module,
    args: TrainingArgs,
    optimizer: optim.Optimizer,
    resume_from: Path | None,
    optimizer_from: Path | None,
) -> int:
    """Gradient checkpointing and what the run continues from; returns the step it starts after."""
    if args.grad_checkpoint:
        checkpoint_layers(model)  # mlx-lm's (what it relies on: compat.py)
    if resume_from is not None:
        return checkpoint.restore(resume_from, model, optimizer)
    if optimizer_from is not None:
        checkpoint.restore_moments(optimizer_from, optimizer)
    return 0


def _micro_batches(
    step_fn: Step, args: TrainingArgs, ref: RefLogps, order: _DataOrder, step: int, window: MetricWindow
) -> tuple[dict, int]:
    """One optimizer step's gradients, averaged over its `grad_accum` micro-batches, and the last one's epoch.

    With several ranks each takes its share of every global micro-batch, weighted by its part of it
    (distributed.py); None when this rank had no pairs at all.
    """
    grads, group = None, distributed.group()
    for micro in range(args.grad_accum):
        epoch, global_pairs = order.micro_batch((step - 1) * args.grad_accum + micro)
        pairs = group.share(global_pairs)
        if not pairs:  # a global batch smaller than the group: this rank adds nothing to it
            continue
        batch = step_fn.batch(pairs, ref)
        (_, metrics), g = step_fn(batch)
        g = group.weigh(g, len(pairs), len(global_pairs))
        grads = g if grads is None else tree_map(mx.add, grads, g)
        window.add(metrics, batch.num_tokens)
        if args.grad_accum > 1:
            mx.eval(grads, window.sums)  # bound memory: free this micro-batch's activations
    if args.grad_accum > 1 and grads is not None:
        grads = tree_map(lambda g: g / args.grad_accum, grads)
    return grads, epoch


def _report(
    args: TrainingArgs,
    step: int,
    window: MetricWindow,
    optimizer: optim.Optimizer,
    batches_per_epoch: int,
    run_info: Callable[[], dict],
) -> dict:
    """The step report: the window's mean metrics, the schedule's position, throughput and memory."""
    elapsed = time.perf_counter() - window.start
    window = window.across_ranks()
    return {
        "step": step,
        "epoch": round(((step - 1) * args.grad_accum + args.grad_accum) / batches_per_epoch, 3),
        **window.means(),
        LEARNING_RATE: float(optimizer.learning_rate.item()),
        TOKENS_PER_SECOND: window.tokens / max(elapsed, 1e-9),
        PEAK_MEMORY_GB: mx.get_peak_memory() / 1e9,
        **run_info(),
    }


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
    checks: SelfChecks | None = None,
) -> dict[str, float]:
    """Train the adapter on `model` in place; returns the last reported metrics. `checks`: the model session's
    record of the self-check (fast_path.py), shared with its reference pass and evaluation."""
    checks = checks if checks is not None else SelfChecks()
    steps = total_steps(args, len(train_pairs))
    optimizer = make_optimizer(args, steps)
    start_step = _prepare(model, args, optimizer, resume_from, optimizer_from)
    group = distributed.group()
    if group.size > 1:  # every rank must start from the same adapter, at the same step
        group.check_same(
            **{
                "starting adapter": arrays_digest(dict(tree_flatten(model.trainable_parameters()))),
                "starting step": str(start_step),
            }
        )
    model.train()
    step_fn = make_step(model, args, on_event, checks)
    order = _DataOrder(train_pairs, args)
    window = MetricWindow.restored(checkpoint.read_state(resume_from).get("report_window") if resume_from else None)
    last: dict = {}
    for step in range(start_step + 1, steps + 1):
        if cancel is not None and cancel.is_set():
            on_event(Cancelled(step=step - 1, adapter_path=str(adapter_dir)))
            model.eval()
            return last
        mx.random.seed(args.seed * 1_000_003 + step)  # dropout noise is a function of (seed, step): resumable
        grads, epoch = _micro_batches(step_fn, args, ref, order, step, window)
        grads = group.sum_gradients(grads, model.trainable_parameters())  # the global batch's mean gradient
        if args.max_grad_norm:
            grads, _ = optim.clip_grad_norm(grads, args.max_grad_norm)
        optimizer.update(model, grads)
        mx.eval(model.trainable_parameters(), optimizer.state, window.sums)

        if step % args.steps_per_report == 0 or step == steps:
            last = _report(args, step, window, optimizer, order.batches_per_epoch, run_info)
            on_event(StepMetrics(step=step, total_steps=steps, metrics=last))
            window = MetricWindow()
        if valid_pairs and (step % args.steps_per_eval == 0 or step == steps):
            model.eval()
            ev = evaluate_pairs(model, args, group.share(valid_pairs), ref, checks)
            model.train()
            on_event(EvalMetrics(step=step, metrics={"step": step, **{f"{EVAL}{k}": v for k, v in ev.items()}}))
        if step % args.save_every == 0 or step == steps:
            window_state = window.state()  # on every rank: it sums over them
            if group.is_writer:
                path = checkpoint.save(
                    adapter_dir,
                    step,
                    model,
                    optimizer,
                    adapter_config,
                    {
                        "args": asdict(args),
                        "batches_per_epoch": order.batches_per_epoch,
                        "epoch": epoch,
                        "data_order": order.batches(epoch),
                        "report_window": window_state,
                    },
                )
                on_event(CheckpointSaved(step=step, path=str(path)))
        pause.pause_at(f"step:{step}")  # a test hook (pause.py)
    model.eval()
    return last
