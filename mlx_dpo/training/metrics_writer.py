"""Where a run's metrics go: `<adapter>/metrics.jsonl` (or --metrics-file), one JSON line per step report and
evaluation, and the run's tracker (`--report-to trackio`: tracking.py). Every StepMetrics and EvalMetrics event of
a run passes through MetricsWriter, so this is the one place metrics leave a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mlx_dpo.atomic import atomic_file, write_failure
from mlx_dpo.events import EvalMetrics, Event, StepMetrics
from mlx_dpo.settings import RunOptions
from mlx_dpo.tracking import Tracker, open_tracker

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends step and eval metrics as JSON lines (flushed per line, so a killed run keeps them) and hands each
    line to the run's tracker (tracking.py, `--report-to`): the one place a run's metrics leave it."""

    def __init__(
        self, path: Path, forward: Callable[[Event], None], tracker: Tracker | None = None, own_tracker: bool = False
    ):
        self.path, self.forward, self.tracker, self.own_tracker = path, forward, tracker, own_tracker
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, (StepMetrics, EvalMetrics)):
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(event.metrics) + "\n")
            except OSError as e:  # a full disk: one line (a line cut short is dropped on --resume)
                failure = write_failure(self.path, e, True)
                if failure is None:
                    raise
                raise failure from None
            if self.tracker is not None:
                self.tracker.log_metrics(event.metrics)
        self.forward(event)

    def close(self) -> None:
        """Finish the tracker this run opened (a round's tracker is the round's to finish)."""
        if self.tracker is not None and self.own_tracker:
            self.tracker.finish()


def metrics_writer(
    run: RunOptions,
    adapter_dir: Path,
    resume_step: int | None,
    emit: Callable[[Event], None],
    tracker: Tracker | None,
    config: dict,
) -> MetricsWriter:
    """The run's metrics file, started afresh or cut back to the checkpoint step it resumes from, and its tracker:
    `tracker` when a round gives its own, else the one `report_to` asks for (None for "none")."""
    metrics_path = Path(run.metrics_file) if run.metrics_file else adapter_dir / METRICS_FILE
    if resume_step is None:
        metrics_path.unlink(missing_ok=True)
    else:
        _forget_metrics_after(metrics_path, resume_step)
    own = tracker is None
    if own:
        tracker = open_tracker(
            run.report_to, run.project, adapter_dir.name, config, emit, resume=resume_step is not None
        )
    return MetricsWriter(metrics_path, emit, tracker, own)


def _forget_metrics_after(path: Path, step: int) -> None:
    """Drop metrics lines past `step`: a killed run may have reported steps after its last checkpoint,
    and the resumed run reports them again. A line cut short by the kill is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and int(row.get("step", 0)) <= step:
            kept.append(line + "\n")
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.writelines(kept)
