"""The self-check: a fast log-prob path is used only after it reproduced the model's own forward.

Three optimisations can go wrong on a family we have not met (logprobs.py, shared_prompt.py, packed.py):
  completion-only head   only completion positions go through the vocabulary projection, via the
                         model's own post-transformer code replayed on chosen hidden states;
  shared prompt          each prompt runs once, with our caches and masks driving mlx-lm's layers;
  packed rows            several sequences side by side in a row under a block-diagonal mask (asked for
                         with `pack`; probed when first asked for, its sequences behind a long one).
Before the first train step, evaluation or reference pass on a model, both are run on a short probe
(two pairs whose prompts and completions differ in length, so left and right padding are exercised)
and compared per token with log-softmax of the model's own `model(inputs)`: the log-probs, and log Σ_v p_v²
(WPO's normaliser, computed from the same projected logits). A path that differs beyond
tolerance, or raises, is switched off for that model, and one Status line says which path runs and why.

The findings are kept in the model session's record (`ModelSession.checks`, models/session.py), so the
reference pass, the step and evaluation of one run share one decision (and one probe); a caller with a bare
model and no record gets a probe of its own. `resolve` is the one function every caller uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_dpo.compat import MASK_LAYOUTS
from mlx_dpo.events import Event, Status
from mlx_dpo.models.session import SelfChecks
from mlx_dpo.settings import TrainingArgs
from mlx_dpo.training.batching import (
    BatchLayout,
    layout_for,
    make_packed_batch,
    make_pair_batch,
    supports_shared_prompt,
)
from mlx_dpo.training.logprobs import packed_token_stats, shared_prompt_token_stats, token_stats
from mlx_dpo.training.tokens import EncodedPair

# Per-token tolerance. In float32 two correct paths differ by rounding only: log-probs are differences of
# numbers around 10-30 (logsumexp over the vocabulary), ~1e-7 relative each, summed differently through
# the layers, which measured <= 2e-5 on every family tested. A real mistake (a dropped soft-cap or logit
# scale, a window not applied) costs 0.1-10 nats on some token. 1e-3 sits well between. Half-precision
# logits are rounded to ~eps * |logit| (bf16: 0.125 at 30), so there the bound scales with eps.
TOLERANCE_FP32 = 1e-3
TOLERANCE_EPS = 64

_PROBE_SHAPE = ((3, 5, 8), (9, 7, 4))  # (prompt, chosen, rejected) lengths of the two probe pairs
# The packed probe adds a pair this long in front: in rows of _PACK_ROW, the others then sit behind its chosen
# sequence, at positions a real row reaches, and its rejected one fills a second row (a mask of the wrong rank
# can broadcast over one row).
_PACK_LEAD = (200, 9, 6)
_PACK_ROW = 256


@dataclass
class FastPaths:
    """What the probe found on one model: a reason each fast path is off (None when it reproduces the model)."""

    head_problem: str | None
    shared_problem: str | None
    max_error: float  # worst per-token error of the paths that passed
    mask_dims: int = 4  # the attention-mask layout the shared-prompt forward passed with (shared_prompt.py)


def _probe(model: nn.Module, shape: tuple[tuple[int, int, int], ...] = _PROBE_SHAPE) -> list[EncodedPair]:
    vocab = model.model.embed_tokens.weight.shape[0]
    rng = np.random.default_rng(0)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(int(t) for t in rng.integers(3, vocab, n))

    return [EncodedPair(f"probe{i}", ids(p), ids(c), ids(r)) for i, (p, c, r) in enumerate(shape)]


def _tolerance(logits_dtype: mx.Dtype) -> float:
    if logits_dtype == mx.float32:
        return TOLERANCE_FP32
    return max(
        TOLERANCE_FP32, TOLERANCE_EPS * float(np.finfo(np.float16).eps if logits_dtype == mx.float16 else 2.0**-7)
    )


def _error(fast: Callable[[], mx.array], plain: mx.array, mask: mx.array) -> tuple[float | None, str | None]:
    """The worst per-token |fast - plain|, or why the fast path could not run."""
    try:
        values = fast()
        mx.eval(values)
    except Exception as e:  # any failure of an unknown family's forward means: not this path
        return None, f"fails on this model ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    C = min(values.shape[-1], plain.shape[-1])
    err = float(mx.max(mx.abs(values[..., :C] - plain[..., :C]) * mask[:, :C]).item())
    return err, None


def _first_layout(
    stats: Callable[[int], tuple[mx.array, mx.array | None]], plain: mx.array, mask: mx.array, tol: float
) -> tuple[float, str | None, int]:
    """Try a fast forward (`stats(mask_dims)`) with each mask layout mlx-lm families take; keep the first that
    matches. Returns (its error, why none matched or None, the mask layout that matched)."""
    problem, worst = None, 0.0
    for dims in MASK_LAYOUTS:
        err, failure = _error(lambda dims=dims: mx.stack(stats(dims)), plain, mask)
        if failure is None and err <= tol:
            return err, None, dims
        if problem is None or failure is None:  # a mismatch says more than a shape error of the other layout
            problem = failure or f"differs from the model's own forward by {err:.3g} per token on a probe"
            worst = err or 0.0
    return worst, problem, MASK_LAYOUTS[0]


def _check_shared(
    model: nn.Module, pairs: list[EncodedPair], plain: mx.array, mask: mx.array, tol: float
) -> tuple[float, str | None, int]:
    """The shared-prompt forward's `_first_layout` on the probe pairs."""
    batch = make_pair_batch(pairs, BatchLayout.SHARED_PROMPT)
    return _first_layout(lambda dims: shared_prompt_token_stats(model, batch, mask_dims=dims), plain, mask, tol)


def _measure(model: nn.Module) -> FastPaths:
    if not supports_shared_prompt(model):
        reason = "needs mlx-lm's model layout (model.model with embed_tokens and layers)"
        return FastPaths(reason, reason, 0.0)
    pairs = _probe(model)
    sequences = make_pair_batch(pairs, BatchLayout.SEQUENCES)
    was_training = model.training
    model.eval()  # no dropout: both sides must see the same function
    try:
        # (2, n, C): each path's log-probs and log Σ p² per token, both checked.
        plain = mx.stack(token_stats(model, sequences, full_logits=True))
        tol = _tolerance(model(sequences.inputs[:1, :1]).dtype)
        head_err, head_problem = _error(lambda: mx.stack(token_stats(model, sequences)), plain, sequences.mask)
        if head_problem is None and head_err > tol:
            head_problem = f"differs from the model's own forward by {head_err:.3g} per token on a probe"
        if head_problem is not None:
            return FastPaths(head_problem, "it needs the completion-only head", 0.0)
        shared_err, shared_problem, dims = _check_shared(model, pairs, plain, sequences.mask, tol)
    finally:
        model.train(was_training)
    worst = head_err if shared_problem else max(head_err, shared_err)
    return FastPaths(None, shared_problem, worst, dims)


def fast_paths(model: nn.Module, checks: SelfChecks | None = None) -> FastPaths:
    """The probe's findings for `model`: measured on first use and kept in `checks` (the model session's record;
    None: measured now, kept nowhere)."""
    checks = checks if checks is not None else SelfChecks()
    if checks.fast_paths is None:
        checks.fast_paths = _measure(model)
    return checks.fast_paths


def mask_dims(model: nn.Module, checks: SelfChecks | None = None) -> int:
    """The attention-mask layout the shared-prompt forward takes on `model` (shared_prompt.py), as the probe found."""
    return fast_paths(model, checks).mask_dims


def resolve(
    model: nn.Module,
    checks: SelfChecks | None = None,
    *,
    shared_prompt: bool,
    full_logits: bool,
    on_event: Callable[[Event], None] | None = None,
) -> tuple[bool, bool]:
    """The (shared_prompt, full_logits) a run on `model` uses for what the settings asked.

    A fast path the probe found wrong is turned off. The first time a model meets a request, one
    Status line says which path it runs and why (`checks` remembers which requests were named).
    """
    checks = checks if checks is not None else SelfChecks()
    line, use = describe(model, checks, shared_prompt=shared_prompt, full_logits=full_logits)
    if on_event is not None and (shared_prompt, full_logits) not in checks.announced:
        checks.announced.add((shared_prompt, full_logits))
        on_event(Status(line))
    return use


def describe(
    model: nn.Module, checks: SelfChecks | None = None, *, shared_prompt: bool = True, full_logits: bool = False
) -> tuple[str, tuple[bool, bool]]:
    """The one line naming the log-prob path a request gets on `model`, and its (shared_prompt, full_logits)."""
    if not shared_prompt and full_logits:
        return "log-probs: plain path (full logits, prompt not shared), as asked", (False, True)
    found = fast_paths(model, checks)
    use_head = not full_logits and found.head_problem is None
    # The shared-prompt forward projects through the same head, so it needs the head check too.
    use_shared = shared_prompt and found.head_problem is None and found.shared_problem is None
    parts = [
        "shared prompt" if use_shared else "prompt not shared",
        "completion-only head" if use_head else "full logits",
    ]
    why = []
    if found.head_problem and (shared_prompt or not full_logits):
        why.append(f"the completion-only head {found.head_problem}")
        if shared_prompt:
            why.append("the shared prompt projects through that head")
    elif shared_prompt and found.shared_problem:
        why.append(f"the shared-prompt forward {found.shared_problem}")
    if why:
        label = "switched to the plain path" if not (use_shared or use_head) else "fast path turned off"
        return f"log-probs: {', '.join(parts)} ({label}: {'; '.join(why)})", (use_shared, not use_head)
    checked = f"max error {found.max_error:.1e} per token against the model's own forward on a probe"
    return f"log-probs: {', '.join(parts)} ({checked})", (use_shared, not use_head)


def _measure_packing(model: nn.Module, checks: SelfChecks) -> None:
    """Probe the packed forward (packed.py) with each mask layout; keep why it is off, or its layout and error."""
    found = fast_paths(model, checks)
    if found.head_problem is not None:
        checks.packing = f"the completion-only head {found.head_problem}"
        return
    pairs = _probe(model, (_PACK_LEAD, *_PROBE_SHAPE))
    sequences = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    was_training = model.training
    model.eval()
    try:
        plain_batch = make_pair_batch(pairs, BatchLayout.SEQUENCES)
        plain = mx.stack(token_stats(model, plain_batch, full_logits=True))
        tol = _tolerance(model(plain_batch.inputs[:1, :1]).dtype)
        batch = make_packed_batch(sequences, row_length=_PACK_ROW)
        err, checks.packing, dims = _first_layout(
            lambda dims: packed_token_stats(model, batch, mask_dims=dims), plain, plain_batch.mask, tol
        )
        if checks.packing is None:
            checks.pack_found = (dims, err)
    finally:
        model.train(was_training)


def packs(
    model: nn.Module,
    checks: SelfChecks | None = None,
    *,
    pack: bool,
    full_logits: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> bool:
    """Whether a run that asked for packed rows (`pack`) gets them on `model`; the first time, one Status line
    says which and why (the probe's error, or what turned packing off)."""
    if not pack:
        return False
    checks = checks if checks is not None else SelfChecks()
    if full_logits:
        why = "--full-logits asks for the plain path"
    elif not supports_shared_prompt(model):
        why = "it needs mlx-lm's model layout (model.model with embed_tokens and layers)"
    else:
        if checks.unchecked("packing"):
            _measure_packing(model, checks)
        why = None if checks.packing is None else f"the packed forward {checks.packing}"
    if on_event is not None and ("pack", full_logits) not in checks.announced:
        checks.announced.add(("pack", full_logits))
        line = (
            f"log-probs: packed rows (max error {checks.pack_found[1]:.1e} per token against the model's own "
            "forward on a probe)"
            if why is None
            else f"log-probs: rows not packed ({why})"
        )
        on_event(Status(line))
    return why is None


def layout(model: nn.Module, checks: SelfChecks | None, args: TrainingArgs) -> tuple[BatchLayout, int]:
    """The batch layout of a run with `args` as `checked_args` left them, and the attention-mask layout
    (MASK_LAYOUTS) its fast forward takes on `model` (4 where it takes none)."""
    chosen = layout_for(model, args.shared_prompt, args.pack)
    if chosen is BatchLayout.PACKED:
        return chosen, (checks or SelfChecks()).pack_found[0]
    if chosen is BatchLayout.SHARED_PROMPT:
        return chosen, mask_dims(model, checks)
    return chosen, 4


def checked_args(
    model: nn.Module, checks: SelfChecks | None, args: TrainingArgs, on_event: Callable[[Event], None] | None = None
) -> TrainingArgs:
    """`args` with the fast paths the probe found wrong on `model` turned off (see `resolve`)."""
    shared_prompt = args.shared_prompt
    if shared_prompt and args.grad_checkpoint:
        # A checkpointed block runs again in the backward pass, and the prompt keys the completions reuse
        # leave the block without a gradient path: the shared prompt would train on wrong gradients.
        shared_prompt = False
        if on_event is not None:
            on_event(
                Status(
                    "log-probs: prompt not shared, as --grad-checkpoint needs (each block's backward "
                    "recomputes it, which the shared prompt pass cannot follow)"
                )
            )
    pack = packs(model, checks, pack=args.pack, full_logits=args.full_logits, on_event=on_event)
    if not pack:  # a packed run shares no prompt: nothing to say of that path
        shared_prompt, full_logits = resolve(
            model, checks, shared_prompt=shared_prompt, full_logits=args.full_logits, on_event=on_event
        )
    else:
        full_logits = args.full_logits
    if (shared_prompt, full_logits, pack) == (args.shared_prompt, args.full_logits, args.pack):
        return args
    return replace(args, shared_prompt=shared_prompt, full_logits=full_logits, pack=pack)
