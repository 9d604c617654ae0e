"""Progress events of a training or evaluation run, for the CLI's progress bar and the TUI."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Event:
    pass


@dataclass
class Status(Event):
    """A phase began or moved on (loading, tokenizing, reference pass)."""

    message: str
    done: int = 0
    total: int = 0


@dataclass
class StepMetrics(Event):
    step: int
    total_steps: int
    metrics: dict = field(default_factory=dict)


@dataclass
class EvalMetrics(Event):
    step: int
    metrics: dict = field(default_factory=dict)


@dataclass
class CheckpointSaved(Event):
    step: int
    path: str


@dataclass
class Finished(Event):
    adapter_path: str
    metrics: dict = field(default_factory=dict)


@dataclass
class Cancelled(Event):
    step: int
    adapter_path: str


@dataclass
class Failed(Event):
    error: str


# The end of a round run in a process of its own (the app's Train screen): what `run_round` returned, as
# plain fields, or why it failed. The child sends every event as its dataclass (a multiprocessing queue
# pickles it), and the parent gets the same class back; these two end the stream.


@dataclass
class RoundEnded(Event):
    version: int
    status: str  # "finished" or "cancelled"
    adapter_path: str
    metrics: dict = field(default_factory=dict)
    decision: str | None = None  # a finished round's: "accepted" or "rejected"
    reason: str | None = None


@dataclass
class RoundFailed(Event):
    error: str
