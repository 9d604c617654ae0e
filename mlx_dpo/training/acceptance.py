"""Was a round worth keeping? One function, `decide`, reads a trained version's held-out numbers and says.

    accepted, reason = decide(candidate, previous, base, accept="better", kl_budget=3.0)

`candidate` is the new version's held-out numbers (training/heldout.py, keys `heldout/...`), `previous` the last
accepted version's (None: no round is accepted yet, so the base's own numbers stand in), `base` the base's.
`accept` (`--accept`) says how much is checked:

  always   every finished round is kept
  kl       kept when its KL to the base is within `kl_budget` (nats per answer) and its degeneration figures
           do not jump
  better   kl's checks, and with a program judge it must not lose to the previous accepted version: its win rate
           against that version's samples at least 0.5 minus `margin(n)` over the n comparisons judged

The margin the sample count justifies: `margin(n) = Z * 0.5 / sqrt(n)` with Z = 2, two standard errors of a
win rate whose true value is 0.5 (a binomial proportion's standard error is sqrt(p(1-p)/n), largest at p = 0.5;
ties counting half only lower it). 64 comparisons: 0.125; 16: 0.25. A version is rejected only for a loss that
chance would rarely show (about 2% one-sided), not for noise.

A degeneration figure jumps when it rises above the previous accepted version's by more than `margin(samples)`:
the same bound, as both figures are means of values in [0, 1] (standard deviation at most 0.5). The repeated
3-gram share of a repetition loop (0.5 and more) clears it; a sample or two more cut at max tokens does not.

A rejected round stays on disk with its reason; the next round samples from and trains on top of the last
accepted version, and its learning rate is halved for every rejection since (`step_scale`). Why halve the
learning rate rather than take fewer steps: the steps follow the round's pairs (it retrains the rejected round's
pairs plus the new ones), and AdamW's step size is proportional to the learning rate whatever the gradient's
size, so halving it halves each update; the KL a round adds grows about with the square of the change in the
weights (KL ~ 1/2 d'Fd for a small change d), so a halved step adds about a quarter of the KL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mlx_dpo.metric_names import (
    HELDOUT_COMPARED_PREVIOUS,
    HELDOUT_KL,
    HELDOUT_REPETITION,
    HELDOUT_SAMPLES,
    HELDOUT_UNFINISHED,
    HELDOUT_WIN_VS_PREVIOUS,
)
from mlx_dpo.settings import ACCEPT_MODES  # always, kl, better

Z = 2.0  # standard errors a loss (or a jump) must exceed before it counts
RETRY_SCALE = 0.5  # the learning rate's factor for each rejection since the last accepted version

Numbers = Mapping[str, object]


def margin(n: int) -> float:
    """How far below 0.5 a win rate over `n` comparisons (or how far up a mean of [0, 1] values over n samples) may
    go by chance: Z standard errors of a proportion at 0.5. Infinite for n = 0 (nothing measured)."""
    return Z * 0.5 / math.sqrt(n) if n > 0 else math.inf


def step_scale(rejected_since_accepted: int) -> float:
    """The learning rate's factor for a round after that many rejections in a row."""
    return RETRY_SCALE**rejected_since_accepted


def _number(metrics: Numbers | None, key: str) -> float | None:
    value = (metrics or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def decide(
    candidate: Numbers, previous: Numbers | None, base: Numbers, *, accept: str = "better", kl_budget: float = 3.0
) -> tuple[bool, str]:
    """(accepted, reason in words): the one rule that keeps a round or turns it down (see the module docstring)."""
    if accept not in ACCEPT_MODES:
        raise ValueError(f"accept must be one of {', '.join(ACCEPT_MODES)} (got {accept!r})")
    if accept == "always":
        return True, "kept without a check (--accept always)"
    reference = previous if previous is not None else base
    against = "the previous version" if previous is not None else "the base"
    failed, passed = [], []
    kl = _number(candidate, HELDOUT_KL)
    if kl is None:
        return True, "kept unchecked: no held-out samples to measure its KL on"
    (failed if kl > kl_budget else passed).append(
        f"KL {kl:.2f} {'>' if kl > kl_budget else '<='} budget {kl_budget:g} nats"
    )
    samples = int(_number(candidate, HELDOUT_SAMPLES) or 0)
    for key, name in ((HELDOUT_REPETITION, "repeated 3-grams"), (HELDOUT_UNFINISHED, "unfinished")):
        now, before = _number(candidate, key), _number(reference, key)
        if now is None or before is None:
            continue
        jumped = now - before > margin(samples)
        (failed if jumped else passed).append(f"{name} {before:.2f} -> {now:.2f}" + (" (a jump)" if jumped else ""))
    if accept == "better":
        rate, n = _number(candidate, HELDOUT_WIN_VS_PREVIOUS), int(_number(candidate, HELDOUT_COMPARED_PREVIOUS) or 0)
        if rate is None:
            passed.append("no judge's win rate to check")
        else:
            floor = 0.5 - margin(n)
            lost = rate < floor
            (failed if lost else passed).append(
                f"wins {rate:.2f} vs {against} ({'<' if lost else '>='} {floor:.2f} over {n})"
            )
    if failed:
        return False, "; ".join(failed)
    return True, "; ".join(passed)
