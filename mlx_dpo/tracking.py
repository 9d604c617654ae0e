"""Runs in the tracker people already use: `--report-to trackio` logs what metrics.jsonl holds, under TRL's names.

    tracker = open_tracker("trackio", project="my-workspace", run="v3", config={...})
    tracker.log_metrics({"step": 3, "loss": 0.61, ...})   # train/loss, ... at step 3
    tracker.log_heldout(metrics, answers, step=8)          # heldout/..., and the answers as a table
    tracker.finish()

Names are those TRL's trainers get in trackio and W&B (transformers' rewrite_logs): a step report's `loss` is
`train/loss`, an evaluation's `eval_loss` is `eval/loss`, each line with `train/global_step`. A round's held-out
numbers keep theirs (`heldout/accuracy`, `heldout/kl`, `heldout_base/score`, ...) at the round's last step, and
its held-out answers are one table, `completions`, with TRL's LogCompletionsCallback columns (step, prompt,
completion). The project is the workspace (a plain run: --project, default "mlx-dpo"); the run is the version
("v3"), or a plain run's adapter folder name.

The one place events become metrics is run.py's MetricsWriter (it writes metrics.jsonl), so the tracker is fed
there; rounds.py adds the held-out numbers after its round. trackio is local-first: a SQLite store under
TRACKIO_DIR (default $HF_HOME/trackio) and a local dashboard (`trackio show`); nothing leaves the machine unless
the user points trackio at a Space or a server (TRACKIO_SPACE_ID, TRACKIO_SERVER_URL). It is an optional extra
(`pip install 'mlx-dpo[trackio]'`), imported only when asked for. Its banners are silenced (a command's stdout
is its JSON); one Status line names the project and run instead. A tracker that fails mid-run is switched off
with one Status line: the run goes on, and metrics.jsonl keeps every number.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Status
from mlx_dpo.metric_names import EVAL, HELDOUT, HELDOUT_BASE

DEFAULT_PROJECT = "mlx-dpo"
COMPLETIONS = "completions"  # TRL's LogCompletionsCallback table name and columns
COMPLETION_COLUMNS = ("step", "prompt", "completion")


def trl_names(metrics: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """(step, the numbers by TRL's names in a tracker): `loss` -> train/loss, `eval_loss` -> eval/loss."""
    step = int(metrics["step"])
    named = {
        ("eval/" + k[len(EVAL) :] if k.startswith(EVAL) else "train/" + k): v
        for k, v in metrics.items()
        if k != "step" and _number(v)
    }
    return step, {**named, "train/global_step": step}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_available(report_to: str) -> None:
    """MlxDpoError, before anything loads, when the asked-for tracker is not installed."""
    if report_to == "trackio" and importlib.util.find_spec("trackio") is None:
        raise MlxDpoError(
            "--report-to trackio needs trackio; run: pip install 'mlx-dpo[trackio]' (or pip install trackio)"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """trackio prints its banners on stdout, which is a command's JSON: our one Status line says it instead."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


class Tracker:
    """One run in trackio. Every call is guarded: a failure switches the tracker off and says so once."""

    def __init__(
        self,
        project: str,
        run: str,
        config: Mapping[str, Any],
        on_event: Callable[[Event], None],
        resume: str = "never",
    ):
        import trackio

        self._trackio, self._emit, self.project, self.name = trackio, on_event, project, run
        try:
            with _quiet():
                self._run = trackio.init(
                    project=project,
                    name=run,
                    config=_plain(config),
                    resume=resume,
                    embed=False,
                    auto_log_cpu=False,
                    auto_log_gpu=False,
                )
        except ValueError as e:  # a project name trackio reserves ("registry-...", "..._system"): say which
            raise MlxDpoError(
                f"trackio refuses the project {project!r} ({str(e).splitlines()[0]}); name another with --project"
            ) from None
        self._open = True

    def _guarded(self, what: str, call: Callable[[], None]) -> None:
        if not self._open:
            return
        try:
            with _quiet():
                call()
        except Exception as e:  # trackio's own errors (a locked or full store): never worth stopping a run for
            self._open = False
            self._emit(
                Status(
                    f"trackio: {what} failed ({type(e).__name__}: {e}); tracking is off for this run, "
                    "metrics.jsonl has every number"
                )
            )

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """A step report or an evaluation (metrics.jsonl's line) under TRL's names."""
        step, named = trl_names(metrics)
        self._guarded("logging", lambda: self._run.log(named, step=step))

    def log_heldout(
        self, metrics: Mapping[str, Any], prompts: Sequence[list[dict]], answers: Sequence[Sequence[str]], step: int
    ) -> None:
        """A round's held-out numbers, and its held-out answers as a `completions` table (one row per answer)."""
        numbers = {k: v for k, v in metrics.items() if k.startswith((HELDOUT, HELDOUT_BASE)) and _number(v)}
        rows = [[step, prompt[-1]["content"], answer] for prompt, group in zip(prompts, answers) for answer in group]
        table = self._trackio.Table(columns=list(COMPLETION_COLUMNS), data=rows) if rows else None
        self._guarded(
            "logging", lambda: self._run.log({**numbers, **({COMPLETIONS: table} if table else {})}, step=step)
        )

    def finish(self) -> None:
        self._guarded("finishing", self._trackio.finish)
        self._open = False


def open_tracker(
    report_to: str,
    project: str | None,
    run: str,
    config: Mapping[str, Any],
    on_event: Callable[[Event], None],
    resume: bool = False,
) -> Tracker | None:
    """The run's tracker (None for --report-to none). `resume`: a resumed run goes on in its own trackio run."""
    if report_to == "none":
        return None
    check_available(report_to)
    tracker = Tracker(project or DEFAULT_PROJECT, run, config, on_event, "allow" if resume else "never")
    on_event(
        Status(
            f"trackio: project {tracker.project!r}, run {run!r} (see it with: trackio show --project "
            f"{tracker.project!r})"
        )
    )
    return tracker


def _plain(value: Any) -> Any:
    """A config as JSON-able values (paths and other objects as text)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
