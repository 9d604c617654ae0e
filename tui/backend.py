"""The one boundary between the TUI and the model: a worker thread that owns the loaded model.

MLX streams are thread-local, so the model is loaded, and every answer generated, on one long-lived
daemon thread. The UI talks to it through a queue (`sample`, `cancel`, `stop`) and hears back through
a single callback, called *on the worker thread* with the plain events defined here; the app turns
them into Textual messages (see `tui.messages`). Nothing else in `tui` imports mlx or the model code,
and this module imports them lazily, on the worker thread, so the first screen never waits for them.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from mlx_dpo.errors import MlxDpoError  # no mlx import: safe on the UI thread

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"  # what mlx_dpo.models calls the embedded default
CHUNK_INTERVAL = 0.04  # seconds: stream pieces are batched so the UI is not woken per token


# --- events (sent from the worker thread) ---------------------------------------------------------------


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


@dataclass(frozen=True)
class AdapterFailed:
    error: str  # the model keeps sampling with the adapter it had


Event = AdapterFailed | LoadProgress | ModelReady | LoadFailed | SampleStarted | AnswerChunk | AnswerDone | SampleFailed


# --- requests ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSettings:
    """How answers are sampled. `seed=None` draws a fresh seed per request; slot 2 uses seed + 1."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None

    def check(self) -> None:
        """Raise ValueError naming the bad field."""
        if not 0 <= self.temperature <= 10:
            raise ValueError(f"temperature must be between 0 and 10 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1] (got {self.top_p})")
        if not 1 <= self.max_tokens <= 32768:
            raise ValueError(f"max tokens must be between 1 and 32768 (got {self.max_tokens})")
        if self.seed is not None and not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be between 0 and 2^31-1 (got {self.seed})")

    def summary(self) -> str:
        seed = "random" if self.seed is None else str(self.seed)
        return f"temp {self.temperature:g} · top-p {self.top_p:g} · max {self.max_tokens} tokens · seed {seed} · s to change"

    def with_seed(self, seed: int | None) -> "SampleSettings":
        return replace(self, seed=seed)


@dataclass(frozen=True)
class _Request:
    id: int
    messages: list[dict]
    settings: SampleSettings
    # A comparison: slot i answers with adapter adapters[i-1] (None: the base), both with the same seed.
    adapters: tuple[str | None, str | None] | None = None


@dataclass(frozen=True)
class _SetAdapter:
    path: str | None  # None: the base model alone


def display_name(spec: str | None) -> str:
    """A short name for a `--model` value: the default's name, a folder/file name, or the repo id."""
    if spec is None or spec == "default":
        return DEFAULT_MODEL_NAME
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or path.exists():
        return path.name or spec
    return spec


class ModelWorker:
    """Owns the model on one daemon thread; loads it, then serves sampling requests in order.

    `report(event)` is called on the worker thread. Only the newest request matters: a newer
    `sample()` (or `cancel()`) bumps a generation counter that the streaming loop checks between
    chunks, so an older request stops producing output at once.
    """

    def __init__(
        self,
        model: str | None,
        adapter_path: str | Path | None,
        report: Callable[[Event], None],
    ) -> None:
        self.model = model
        self.adapter_path = str(adapter_path) if adapter_path is not None else None
        self.name = display_name(model) + (f" + {Path(adapter_path).name}" if adapter_path else "")
        self._report_cb = report
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._lock = threading.Lock()
        self._generation = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="mlx-dpo-model", daemon=True)
        self.load_error: str | None = None
        self.ready = threading.Event()

    # --- called from the UI thread ---

    def start(self) -> None:
        self._thread.start()

    def sample(self, messages: list[dict], settings: SampleSettings) -> int:
        """Queue a request for two answers; returns its id. Older requests stop producing output."""
        with self._lock:
            self._generation += 1
            request = _Request(self._generation, [dict(m) for m in messages], settings)
        self._requests.put(request)
        return request.id

    def compare(self, messages: list[dict], settings: SampleSettings, adapters: tuple[str | None, str | None]) -> int:
        """Queue a comparison: answer 1 from base + adapters[0], answer 2 from base + adapters[1] (None: the
        base alone), with the same seed. A version other than the current one is loaded for the request and
        dropped after it. Reports the same events as `sample`; returns the request id."""
        with self._lock:
            self._generation += 1
            request = _Request(self._generation, [dict(m) for m in messages], settings,
                               tuple(None if a is None else str(a) for a in adapters))
        self._requests.put(request)
        return request.id

    def set_adapter(self, path: str | Path | None) -> None:
        """Reload the base model with the adapter at `path` (None: the base alone), on the worker thread.
        Reports ModelReady (name and sampler naming the adapter) when done, AdapterFailed if it cannot."""
        self.cancel()  # a sample in progress belongs to the old adapter
        self._requests.put(_SetAdapter(None if path is None else str(path)))

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
        self._requests.put(None)
        if timeout and self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the worker thread ---

    def _report(self, event: Event) -> None:
        if self._stopping and not isinstance(event, (LoadFailed, ModelReady)):
            return
        try:
            self._report_cb(event)
        except Exception:  # the app may be gone; never let a report kill the thread
            pass

    def _current(self, request_id: int) -> bool:
        return not self._stopping and self._generation == request_id

    def _load(self):
        total = 2
        from mlx_dpo.models import converted_dir, default_gguf, load_model, resolve_model_path

        spec = self.model
        first_run = False
        try:
            if spec is None or spec == "default" or spec.lower().endswith(".gguf"):
                gguf = default_gguf() if spec in (None, "default") else Path(spec).expanduser()
                first_run = gguf.is_file() and not (converted_dir(gguf) / "config.json").is_file()
        except Exception:
            first_run = False
        what = f"converting {self.name} for MLX (first run only)…" if first_run else f"finding {self.name}…"
        self._report(LoadProgress(0, total, what))
        resolve_model_path(spec)
        self._report(LoadProgress(1, total, f"loading {self.name}…"))
        return load_model(spec, adapter_path=self.adapter_path)

    def _run(self) -> None:
        loaded = None
        try:
            loaded = self._load()
        except MlxDpoError as e:  # a user-facing message: bad --model, missing file, offline...
            self.load_error = str(e)
            self._report(LoadFailed(self.load_error))
        except Exception as e:  # a bug or an unexpected environment: keep the type, print the traceback
            self.load_error = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            self._report(LoadFailed(self.load_error))
        else:
            sampler = loaded.name  # the --model value, or the default's name
            if self.adapter_path:
                sampler += f"+{self.adapter_path}"
            self._report(LoadProgress(2, 2, f"{self.name} ready"))
            self._report(ModelReady(self.name, sampler))
        self.ready.set()
        while True:
            request = self._requests.get()
            if request is None or self._stopping:
                return
            if isinstance(request, _SetAdapter):
                loaded = self._switch_adapter(loaded, request.path)
                continue
            if not self._current(request.id):
                continue  # superseded while waiting
            if loaded is None:
                self._report(SampleFailed(request.id, f"the model could not be loaded: {self.load_error}"))
                continue
            try:
                self._serve(loaded, request)
            except Exception as e:
                error = str(e) if isinstance(e, MlxDpoError) else f"{type(e).__name__}: {e}"
                self._report(SampleFailed(request.id, error))

    def _switch_adapter(self, loaded, path: str | None):
        """Load the base afresh and put the adapter on it (simple and correct: no LoRA layers to strip)."""
        from mlx_dpo.models import apply_adapter, load_model

        try:
            new = load_model(self.model)
            if path is not None:
                apply_adapter(new, path)
        except Exception as e:
            self._report(AdapterFailed(str(e) if isinstance(e, MlxDpoError) else f"{type(e).__name__}: {e}"))
            return loaded
        self.adapter_path = path
        self.name = display_name(self.model) + (f" + {Path(path).name}" if path else "")
        self._report(ModelReady(self.name, new.name + (f"+{path}" if path else "")))
        return new

    def _model_for(self, loaded, adapter: str | None):
        """The loaded model with `adapter` on it: the current one, or a fresh load for this request."""
        if adapter == self.adapter_path:
            return loaded
        from mlx_dpo.models import apply_adapter, load_model

        other = load_model(self.model)
        if adapter is not None:
            apply_adapter(other, adapter)
        return other

    def _stream(self, loaded, request: _Request, seed: int) -> Iterator[str]:
        s = request.settings
        from mlx_dpo.generate import stream_answer

        return stream_answer(
            loaded, request.messages, max_tokens=s.max_tokens, temp=s.temperature, top_p=s.top_p, seed=seed
        )

    def _serve(self, loaded, request: _Request) -> None:
        seed = request.settings.seed
        if seed is None:
            seed = random.randrange(0, 2**31 - 2)
        seeds = (seed, seed) if request.adapters is not None else (seed, seed + 1)
        self._report(SampleStarted(request.id, seeds))
        for slot, slot_seed in zip((1, 2), seeds):
            text, pending, last = "", "", time.monotonic()
            model = loaded if request.adapters is None else self._model_for(loaded, request.adapters[slot - 1])
            if not self._current(request.id):
                return
            pieces = self._stream(model, request, slot_seed)
            try:
                for piece in pieces:
                    if not self._current(request.id):
                        return
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
                return
            if pending:
                self._report(AnswerChunk(request.id, slot, pending))
            self._report(AnswerDone(request.id, slot, text))
