"""The terminal view of a training run: one progress line, and a printed line per report."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mlx_dpo.events import (
    Cancelled,
    CheckpointSaved,
    EvalMetrics,
    Event,
    Failed,
    Finished,
    Status,
    StepMetrics,
)
from mlx_dpo.metric_names import ACCURACY, EVAL, KTO_KL, LOSS, MARGIN, TOKENS_PER_SECOND


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


# What a report line shows, in order, when the method logs it (methods.py): every method has a loss; KTO has a KL
# reference point and no pair accuracy. One printer for every method.
SHOWN = (("loss", LOSS, ".4f"), ("acc", ACCURACY, ".2f"), ("kl", KTO_KL, ".3f"), ("margin", MARGIN, ".3f"))


def scores(metrics: dict, prefix: str = "") -> str:
    """ "loss 0.6931 acc 0.50 margin 0.012": the numbers of SHOWN that `metrics` holds (names after `prefix`)."""
    return " ".join(
        f"{label} {metrics[prefix + name]:{spec}}"
        for label, name, spec in SHOWN
        if isinstance(metrics.get(prefix + name), (int, float))
    )


class ProgressPrinter:
    """Prints events: a bar (step, ETA, loss, accuracy, margin, tokens/s) and one line per report."""

    def __init__(self, stream: TextIO | None = None, width: int = 24):
        # Looked up per printer, not at import: sys.stderr may have been replaced since (tests, embedding).
        self.stream, self.width = stream if stream is not None else sys.stderr, width
        self.start = time.perf_counter()
        self.first_step: int | None = None
        self.tty = self.stream.isatty()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Status):
            suffix = f" {event.done}/{event.total}" if event.total and event.done else ""
            self._line(f"{event.message}{suffix}", final=not self.tty or not suffix)
        elif isinstance(event, StepMetrics):
            m = event.metrics
            if self.first_step is None:
                self.first_step, self.start = event.step - 1, time.perf_counter()
            done = event.step - self.first_step
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(done, 1) * (event.total_steps - event.step)
            filled = int(self.width * event.step / event.total_steps)
            bar = "#" * filled + "-" * (self.width - filled)
            speed = f" {m[TOKENS_PER_SECOND]:.0f} tok/s" if TOKENS_PER_SECOND in m else ""
            self._line(
                f"[{bar}] step {event.step}/{event.total_steps} ETA {_fmt(eta)} {scores(m)}{speed}"
                + (f" on {m['ranks']} ranks" if m.get("ranks", 1) > 1 else ""),
                final=True,
            )
        elif isinstance(event, EvalMetrics):
            self._line(f"  eval @ step {event.step}: {scores(event.metrics, EVAL)}", final=True)
        elif isinstance(event, CheckpointSaved):
            self._line(f"  checkpoint: {event.path}", final=True)
        elif isinstance(event, Finished):
            self._line(f"done: adapter in {event.adapter_path}", final=True)
        elif isinstance(event, Cancelled):
            self._line(f"cancelled after step {event.step}; last checkpoint kept in {event.adapter_path}", final=True)
        elif isinstance(event, Failed):
            pass  # the CLI prints the error itself

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
