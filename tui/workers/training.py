"""The training worker: one incremental round in a child process, for the Train screen.

The round (`mlx_dpo.api.run_round`) runs in a process of its own ('spawn' context: a clean interpreter,
no inherited MLX state or threads), so the UI never waits on it and the model worker's MLX streams are
never shared. The child sends the library's events (`mlx_dpo.events`) back over a multiprocessing Queue,
which pickles each one: the parent gets the same dataclass back. The stream ends with a `RoundEnded` or a
`RoundFailed`; a daemon thread in the app reads the queue and hands each event to a callback (which posts
a `tui.messages.WorkerEvent`).
Cancelling sets a multiprocessing Event: the child stops before its next step, keeping its last
checkpoint (rounds save every step).

No Textual import here, and the library's training code (mlx, mlx_lm) is imported in the child only:
the parent never loads it for a round.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import sys
import threading
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from mlx_dpo import api
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, RoundEnded, RoundFailed

ENDS = (RoundEnded, RoundFailed)  # the last event of every round


def _log_to_file(workspace: str) -> None:
    """The terminal belongs to the app: the child's output (warnings, tracebacks) goes to a log file."""
    log = Path(workspace) / "adapters" / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _child(workspace: str, model: str | None, settings: dict, events, cancel) -> None:
    """The child process: run one round, sending every event (an `mlx_dpo.events` dataclass)."""
    _log_to_file(workspace)
    try:
        os.nice(10)  # the app's event loop comes first: keys stay answered while the round trains
    except OSError:
        pass

    class _Cancel:  # threading.Event's interface over the multiprocessing Event
        def is_set(self) -> bool:
            return cancel.is_set()

    def send(event: Event) -> None:
        # A copy: the queue pickles on a thread of its own, later, and the library may reuse its dicts.
        events.put(copy.deepcopy(event))

    try:
        result = api.run_round(workspace, model=model, settings=settings, on_event=send, cancel=_Cancel())
    except MlxDpoError as e:
        events.put(RoundFailed(str(e)))
    except BaseException as e:
        traceback.print_exc()
        events.put(RoundFailed(f"{type(e).__name__}: {e}"))
    else:
        events.put(
            RoundEnded(
                result.version, result.status, str(result.adapter_path), result.metrics, result.decision, result.reason
            )
        )
    events.put(None)  # the end of the stream


@contextmanager
def _real_stdio():
    """Textual replaces sys.stdout/stderr with objects whose fileno() is -1; multiprocessing passes
    sys.stderr's descriptor to its helper processes, so use the real ones while it starts them."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


class TrainingProcess:
    """One round in a child process. `report(event)` is called on a reader thread for each event,
    ending with a RoundEnded or a RoundFailed."""

    def __init__(self, workspace: str, model: str | None, settings: dict, report: Callable[[Event], None]) -> None:
        ctx = mp.get_context("spawn")
        with _real_stdio():
            self._events = ctx.Queue()
            self._cancel = ctx.Event()
        self._report = report
        self.process = ctx.Process(
            target=_child,
            args=(str(workspace), model, dict(settings), self._events, self._cancel),
            name="mlx-dpo-round",
            daemon=True,
        )
        self._reader = threading.Thread(target=self._read, name="mlx-dpo-round-reader", daemon=True)

    def start(self) -> None:
        with _real_stdio():
            self.process.start()
        self._reader.start()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelling(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        return self._reader.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._reader.join(timeout)
        self.process.join(timeout)

    def _read(self) -> None:
        ended = False
        while True:
            try:
                item = self._events.get(timeout=0.5)
            except Exception:  # queue.Empty: check the child is still there
                if not self.process.is_alive():
                    if not ended:
                        error = f"the training process ended (exit code {self.process.exitcode})"
                        self._safe_report(RoundFailed(error))
                    return
                continue
            if item is None:
                self.process.join(5)
                return
            if isinstance(item, ENDS):
                ended = True
            self._safe_report(item)

    def _safe_report(self, item: Event) -> None:
        try:
            self._report(item)
        except Exception:
            pass
