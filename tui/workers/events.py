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
    note: str | None = None  # what to know before sampling (a base model without a chat template)


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
    finished: bool = True  # False: cut at max tokens (the model did not end it)


@dataclass(frozen=True)
class SampleFailed:
    request_id: int
    error: str


# A label review (the Data screen's "review" view), run on the model thread: it needs the loaded model.


@dataclass(frozen=True)
class ReviewDone:
    request_id: int
    report: object  # mlx_dpo.training.review.ReviewReport: plain data, no mlx arrays


@dataclass(frozen=True)
class ReviewFailed:
    request_id: int
    error: str


# The judge worker's (tui.workers.judge): a program judge's suggestions for the Label screen.


@dataclass(frozen=True)
class JudgeReady:
    name: str  # the judge's name, as the store records it


@dataclass(frozen=True)
class JudgeFailed:
    error: str  # the judge could not be loaded: the app goes on without suggestions


@dataclass(frozen=True)
class Suggestion:
    request_id: int
    answers: tuple[str, str]  # the answers judged, as shown (pane 1, pane 2)
    choice: int | None  # 1 or 2: the better pane; 0: a tie; None: the judge skipped (or failed)
    note: str
    judge: str


ModelEvent = LoadProgress | ModelReady | LoadFailed | AdapterFailed
SampleEvent = SampleStarted | AnswerChunk | AnswerDone | SampleFailed
SAMPLE_EVENTS = (SampleStarted, AnswerChunk, AnswerDone, SampleFailed)  # for isinstance
REVIEW_EVENTS = (ReviewDone, ReviewFailed)
JudgeEvent = JudgeReady | JudgeFailed | Suggestion
Event = ModelEvent | SampleEvent | ReviewDone | ReviewFailed | JudgeEvent
