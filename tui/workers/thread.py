"""The one base of the app's worker threads: a daemon thread that owns library work and serves requests in order.

MLX streams are thread-local: what a worker loads (a model, an `llm:` judge) is loaded, and used, on its own
thread, and no MLX array leaves it. The UI thread hands requests over through a queue and hears back through
one callback, `report(event)`, called on the worker thread; a report that raises (the app is gone) is dropped,
never the thread. `ModelWorker` (model.py) and `JudgeWorker` (judge.py) build on it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from mlx_dpo.errors import MlxDpoError


def describe(error: Exception) -> str:
    """A user-facing message as it is; anything else keeps its type (it is a bug or an odd environment)."""
    return str(error) if isinstance(error, MlxDpoError) else f"{type(error).__name__}: {error}"


class ThreadWorker:
    """A daemon thread running `_run`, with a request queue, a lock for its counters and a stop flag.

    `stop()` sets the flag and wakes the thread with None on the queue; reports stop then, but for the event
    types in REPORTED_WHILE_STOPPING (what a closing app still waits for).
    """

    REPORTED_WHILE_STOPPING: tuple[type, ...] = ()

    def __init__(self, thread_name: str, report: Callable[[Any], None]) -> None:
        self._report_cb = report
        self._requests: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 0.0) -> bool:
        """Stop after the current request; wait up to `timeout` seconds. True when the thread has ended."""
        self._stopping = True
        self._requests.put(None)
        if timeout and self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def started(self) -> bool:
        """Whether the thread was ever started (it may have ended since)."""
        return self._thread.ident is not None

    def _run(self) -> None:
        raise NotImplementedError

    def _report(self, event: Any) -> None:
        if self._stopping and not isinstance(event, self.REPORTED_WHILE_STOPPING):
            return
        try:
            self._report_cb(event)
        except Exception:  # the app may be gone; never let a report kill the thread
            pass
