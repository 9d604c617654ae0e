"""The model worker: one long-lived daemon thread that owns the loaded model.

MLX streams are thread-local, so the model is loaded, and every answer generated, on this one thread;
no MLX array ever leaves it. The UI talks to it through a queue (`sample`, `compare`, `set_adapter`,
`cancel`, `stop`) and hears back through a single callback, called *on the worker thread* with the
plain events of `tui.workers.events`.

The library's model code (which pulls in mlx and mlx_lm: seconds of imports) is reached through the heavy
names of `mlx_dpo.api` (load_model, stream_answer, ...), which load it the first time they are used: on
the worker thread. The app imports this module before its first screen is drawn, and that screen must
not wait for mlx.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from mlx_dpo import api
from mlx_dpo.api import Answer, display_name, is_finished  # no mlx import: safe on the UI thread
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.settings import SampleSettings  # the library's sampler settings (no mlx), re-exported for the app
from tui.workers.events import (
    AdapterFailed,
    AnswerChunk,
    AnswerDone,
    Event,
    LoadFailed,
    LoadProgress,
    ModelReady,
    ReviewDone,
    ReviewFailed,
    SampleFailed,
    SampleStarted,
)
from tui.workers.thread import ThreadWorker
from tui.workers.thread import describe as _describe

CHUNK_INTERVAL = 0.04  # seconds: stream pieces are batched so the UI is not woken per token


@dataclass(frozen=True)
class _Request:
    id: int
    messages: list[dict]
    settings: SampleSettings
    # A comparison: slot i answers with adapter adapters[i-1] (None: the base), both with the same seed.
    adapters: tuple[str | None, str | None] | None = None
    count: int = 2  # answers (slots 1..count, seeds seed..seed+count-1): the Label screen's rating mode asks for 2-6


@dataclass(frozen=True)
class _SetAdapter:
    path: str | None  # None: the base model alone


@dataclass(frozen=True)
class _Review:
    id: int
    workspace: str
    adapter: str | None  # the trained version reviewed; None: the review's own choice (the latest round)


def _version_name(model: str | None, adapter: str | Path | None) -> str:
    """What the status line calls a model version: "SmolLM2-135M-Instruct", "my-model + v2"."""
    return display_name(model) + (f" + {Path(adapter).name}" if adapter else "")


class ModelWorker(ThreadWorker):
    """Owns the model on one daemon thread (thread.py); loads it, then serves sampling requests in order.

    `report(event)` is called on the worker thread. Only the newest request matters: a newer
    `sample()` (or `cancel()`) bumps a generation counter that the streaming loop checks between
    chunks, so an older request stops producing output at once.
    """

    REPORTED_WHILE_STOPPING = (LoadFailed, ModelReady)  # a closing app waits for a load to end

    def __init__(self, model: str | None, adapter_path: str | Path | None, report: Callable[[Event], None]) -> None:
        super().__init__("mlx-dpo-model", report)  # requests: _Request | _SetAdapter | _Review | None (stop)
        self.model = model
        self.adapter_path = str(adapter_path) if adapter_path is not None else None
        self.name = _version_name(model, adapter_path)
        self._generation = 0
        self._reviews = 0  # review request ids (their own count: a review is never superseded)
        self.load_error: str | None = None
        self.ready = threading.Event()
        self.chat_template: str | None = None  # a template file for a model without one (--chat-template)
        self.note: str | None = None  # template_note of the loaded model

    # --- called from the UI thread ---

    def sample(self, messages: list[dict], settings: SampleSettings, count: int = 2) -> int:
        """Queue a request for `count` answers (two to label a pair); returns its id. Older requests stop producing
        output."""
        return self._queue(messages, settings, None, count)

    def compare(self, messages: list[dict], settings: SampleSettings, adapters: tuple[str | None, str | None]) -> int:
        """Queue a comparison: answer 1 from base + adapters[0], answer 2 from base + adapters[1] (None: the
        base alone), with the same seed. A version other than the current one is loaded for the request and
        dropped after it. Reports the same events as `sample`; returns the request id."""
        return self._queue(messages, settings, tuple(None if a is None else str(a) for a in adapters))

    def _queue(self, messages: list[dict], settings: SampleSettings, adapters, count: int = 2) -> int:
        with self._lock:
            self._generation += 1
            request = _Request(self._generation, [dict(m) for m in messages], settings, adapters, count)
        self._requests.put(request)
        return request.id

    def set_adapter(self, path: str | Path | None) -> None:
        """Reload the base model with the adapter at `path` (None: the base alone), on the worker thread.
        Reports ModelReady (name and sampler naming the adapter) when done, AdapterFailed if it cannot."""
        self.cancel()  # a sample in progress belongs to the old adapter
        self._requests.put(_SetAdapter(None if path is None else str(path)))

    def review(self, workspace: str | Path, adapter: str | Path | None = None) -> int:
        """Queue a label review of the workspace's pairs by base + `adapter` (None: the latest finished round),
        for the Data screen's "review" view; reports ReviewDone or ReviewFailed with the returned id. Sampling
        is not cancelled: a review waits for the request before it, and the sample after it waits for it."""
        with self._lock:
            self._reviews += 1
            request = _Review(self._reviews, str(workspace), None if adapter is None else str(adapter))
        self._requests.put(request)
        return request.id

    def cancel(self) -> None:
        with self._lock:
            self._generation += 1

    def stop(self, timeout: float = 0.0) -> bool:
        """Stop after the current chunk (a load in progress runs to its end); wait up to `timeout` seconds.

        Returns True when the thread has ended. The process must not exit while the thread is inside MLX
        (the C++ runtime aborts), so callers wait, or leave with os._exit if a load is still running.
        """
        self._stopping = True
        self.cancel()
        return super().stop(timeout)

    # --- the worker thread ---

    def _current(self, request_id: int) -> bool:
        return not self._stopping and self._generation == request_id

    def _load(self):
        spec = self.model
        first_run = api.converts_on_load(spec)
        what = f"converting {self.name} for MLX (first run only)…" if first_run else f"finding {self.name}…"
        self._report(LoadProgress(0, 2, what))
        api.resolve_model_path(spec)
        self._report(LoadProgress(1, 2, f"loading {self.name}…"))
        return api.load_model(spec, adapter_path=self.adapter_path, chat_template=self.chat_template)

    def _run(self) -> None:
        loaded = None
        try:
            loaded = self._load()
        except Exception as e:  # MlxDpoError: bad --model, missing file, offline...; else a bug: print it
            self.load_error = _describe(e)
            if not isinstance(e, MlxDpoError):
                traceback.print_exc()
            self._report(LoadFailed(self.load_error))
        else:
            self._report(LoadProgress(2, 2, f"{self.name} ready"))
            self.note = api.template_note(loaded)
            # loaded.name: the --model value, or the default's name
            self._report(
                ModelReady(self.name, loaded.name + (f"+{self.adapter_path}" if self.adapter_path else ""), self.note)
            )
        self.ready.set()
        while True:
            request = self._requests.get()
            if request is None or self._stopping:
                return
            if isinstance(request, _SetAdapter):
                loaded = self._switch_adapter(loaded, request.path)
                continue
            if isinstance(request, _Review):
                self._serve_review(loaded, request)
                continue
            if not self._current(request.id):
                continue  # superseded while waiting
            if loaded is None:
                self._report(SampleFailed(request.id, f"the model could not be loaded: {self.load_error}"))
                continue
            try:
                self._serve(loaded, request)
            except Exception as e:
                self._report(SampleFailed(request.id, _describe(e)))

    def _switch_adapter(self, loaded, path: str | None):
        """Swap the adapter on the session's base in place (an adapter file's read, not a reload of the base)."""
        try:
            loaded.use_adapter(path)
        except Exception as e:
            self._report(AdapterFailed(_describe(e)))
            return loaded
        self.adapter_path = path
        self.name = _version_name(self.model, path)
        self._report(ModelReady(self.name, loaded.name + (f"+{path}" if path else ""), self.note))
        return loaded

    def _review(self, loaded, request: _Review):
        return api.review_pairs(request.workspace, adapter_path=request.adapter, loaded=loaded)

    def _serve_review(self, loaded, request: _Review) -> None:
        """The review puts the versions it needs on the session itself (the base as its reference, then the reviewed
        version); the session puts the app's chosen version back on after it."""
        if loaded is None:
            self._report(ReviewFailed(request.id, f"the model could not be loaded: {self.load_error}"))
            return
        try:
            report = self._review(loaded, request)
        except Exception as e:
            self._report(ReviewFailed(request.id, _describe(e)))
        else:
            self._report(ReviewDone(request.id, report))

    def _stream(self, loaded, request: _Request, seed: int) -> Iterator[str]:
        s = request.settings
        return api.stream_answer(
            loaded, request.messages, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, seed=seed
        )

    def _serve(self, loaded, request: _Request) -> None:
        seed = request.settings.seed
        if seed is None:
            seed = random.randrange(0, 2**31 - 2)
        seeds = (seed, seed) if request.adapters is not None else tuple(seed + i for i in range(request.count))
        self._report(SampleStarted(request.id, seeds))
        for slot, slot_seed in enumerate(seeds, start=1):
            # A comparison's slot answers with its version on; the session puts the app's chosen version back after.
            with loaded.adapter(request.adapters[slot - 1]) if request.adapters is not None else nullcontext():
                if not self._current(request.id):
                    return
                text = self._stream_slot(loaded, request, slot, slot_seed)
            if text is None:
                return
            self._report(AnswerDone(request.id, slot, text, is_finished(text)))

    def _stream_slot(self, model, request: _Request, slot: int, seed: int) -> str | None:
        """Stream one answer as AnswerChunk events (batched every CHUNK_INTERVAL); None once superseded. The
        answer is an Answer: unfinished when the stream says it stopped at max tokens."""
        text, pending, last = "", "", time.monotonic()
        pieces = self._stream(model, request, seed)
        try:
            for piece in pieces:
                if not self._current(request.id):
                    return None
                text += piece
                pending += piece
                now = time.monotonic()
                if now - last >= CHUNK_INTERVAL:
                    self._report(AnswerChunk(request.id, slot, pending))
                    pending, last = "", now
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        if not self._current(request.id):
            return None
        if pending:
            self._report(AnswerChunk(request.id, slot, pending))
        return Answer(text, getattr(pieces, "finished", True))
