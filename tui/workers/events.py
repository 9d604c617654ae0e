"""What the model worker reports, as plain frozen dataclasses (no Textual, no mlx: any thread may build them).

The worker calls its `report` callback with these on its own thread; the app wraps each one, unchanged, in a
`tui.messages.WorkerEvent` and posts it to the screen it concerns. Events about one sampling request carry
its `request_id` (`SampleEvent`); the others are about the model itself (`ModelEvent`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadProgress:
    step: int
    total: int
    text: str


@dataclass(frozen=True)
class ModelReady:
    name: str  # short display name
    sampler: str  # what a sampled pair records as its sampler: model (+ adapter)


@dataclass(frozen=True)
class LoadFailed:
    error: str


@dataclass(frozen=True)
class AdapterFailed:
    error: str  # the model keeps sampling with the adapter it had


@dataclass(frozen=True)
class SampleStarted:
    request_id: int
    seeds: tuple[int, int]


@dataclass(frozen=True)
class AnswerChunk:
    request_id: int
    slot: int  # 1 or 2
    text: str  # the new text since the previous chunk


@dataclass(frozen=True)
class AnswerDone:
    request_id: int
    slot: int
    text: str  # the whole answer


@dataclass(frozen=True)
class SampleFailed:
    request_id: int
    error: str


ModelEvent = LoadProgress | ModelReady | LoadFailed | AdapterFailed
SampleEvent = SampleStarted | AnswerChunk | AnswerDone | SampleFailed
SAMPLE_EVENTS = (SampleStarted, AnswerChunk, AnswerDone, SampleFailed)  # for isinstance
Event = ModelEvent | SampleEvent
