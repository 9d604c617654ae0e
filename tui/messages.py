"""The one Textual message for what a worker reports: `WorkerEvent`, carrying the worker's event unchanged.

The model worker (`tui.workers.ModelWorker`) and the training process's reader thread call back on their
own threads; the app (or the Train screen) wraps each event in a `WorkerEvent` and posts it, which is
thread-safe: the handler, `on_worker_event`, runs on the event loop and reads `message.event`.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from mlx_dpo import events as library_events
from tui.workers.events import Event


@dataclass
class WorkerEvent(Message):
    """`event` is a model-worker event (a dataclass of `tui.workers.events`) or, from a training round, the
    library's event (a dataclass of `mlx_dpo.events`), rebuilt from what the child process sent."""

    event: Event | library_events.Event
