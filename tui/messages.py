"""Textual messages the app posts for the model worker's events (see `tui.backend`).

The worker calls back on its own thread; `to_message` wraps each plain event in the matching message,
which `post_message` (thread-safe) delivers to the event loop: handlers are `on_model_ready`, ...
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tui import backend


@dataclass
class LoadProgress(Message):
    step: int
    total: int
    text: str


@dataclass
class ModelReady(Message):
    name: str
    sampler: str


@dataclass
class AdapterFailed(Message):
    error: str


@dataclass
class LoadFailed(Message):
    error: str


@dataclass
class SampleStarted(Message):
    request_id: int
    seeds: tuple[int, int]


@dataclass
class AnswerChunk(Message):
    request_id: int
    slot: int
    text: str


@dataclass
class AnswerDone(Message):
    request_id: int
    slot: int
    text: str


@dataclass
class SampleFailed(Message):
    request_id: int
    error: str


_MESSAGES: dict[type, type[Message]] = {
    backend.LoadProgress: LoadProgress,
    backend.ModelReady: ModelReady,
    backend.LoadFailed: LoadFailed,
    backend.AdapterFailed: AdapterFailed,
    backend.SampleStarted: SampleStarted,
    backend.AnswerChunk: AnswerChunk,
    backend.AnswerDone: AnswerDone,
    backend.SampleFailed: SampleFailed,
}

# Events about one sampling request go to the Label screen; the rest to the app.
SAMPLE_MESSAGES = (SampleStarted, AnswerChunk, AnswerDone, SampleFailed)


def to_message(event: backend.Event) -> Message:
    cls = _MESSAGES[type(event)]
    return cls(**{name: getattr(event, name) for name in event.__dataclass_fields__})


@dataclass
class StoreChanged(Message):
    """Posted to the app after any screen changes the store, so counts and tables refresh."""

    reason: str = ""
