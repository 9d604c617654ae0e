"""The mlx-dpo terminal app: label sampled answers, write pairs, manage the store, train, compare, export.

Wiring only: it opens the store, registers the six modes of `tui.modes` (Label, Write, Data, Train,
Compare, Export; F1-F6) with their screens and the command palette, starts the workers and routes their
events, and offers the screens a few shared services (notifications, the store's counts, the sampling
model's version). The screens live in `tui.screens`, shared widgets in `tui.widgets`, dialogs in
`tui.modals`, styles in the `.tcss` files next to this module.

The app reaches the library through `mlx_dpo.api` alone (and its event, settings and error types); the
workers in `tui.workers` are the only modules that use its heavy names (model, training, export):
- the model thread (`ModelWorker`): loads the model, then generates (and runs the Data screen's label
  reviews, which need the loaded model); MLX arrays never leave it;
- a child process per training round (`TrainingProcess`), read by a daemon thread;
- the judge thread (`JudgeWorker`), with `judge=SPEC` (a program judge): its choice shown as a suggestion;
- the Export screen's export and push calls, on Textual thread workers.
They report on their own threads. Each event is wrapped, unchanged, in one message, `tui.messages.WorkerEvent`,
and posted (thread-safe) to where it is handled: the model's state to the app, a sampling request's events to
the screen that asked (Label or Compare), a suggestion to Label, a review to Data, a round's events to the
Train screen (which posts them itself).

The online loop with a person as its judge (`mlx-dpo online --judge human`) is this app opened with
`prompts=FILE` (the Label screen's queue, starting at the first prompt not judged yet) and `per_round=K`
(a round is started on the Train screen after every K labels), with `train_settings` filled in there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from mlx_dpo.api import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from tui import modes
from tui.messages import WorkerEvent
from tui.prompts import PromptQueue, QueueError
from tui.workers import ModelWorker, SampleSettings, TrainingProcess
from tui.workers.events import (
    REVIEW_EVENTS,
    SAMPLE_EVENTS,
    AdapterFailed,
    Event,
    JudgeFailed,
    JudgeReady,
    LoadFailed,
    LoadProgress,
    ModelReady,
    Suggestion,
)
from tui.workers.judge import JudgeWorker, is_program_judge

WorkerFactory = Callable[..., ModelWorker]


class MlxDpoApp(App):
    TITLE = "mlx-dpo"
    CSS_PATH = [
        "app.tcss",
        "label.tcss",
        "write.tcss",
        "data.tcss",
        "modals.tcss",
        "train.tcss",
        "compare.tcss",
        "export.tcss",
    ]
    SCREENS = {mode.name: mode.screen for mode in modes.MODES}
    MODES = {mode.name: mode.name for mode in modes.MODES}  # each mode's base screen: the one installed above
    BINDINGS = [*modes.mode_bindings(), Binding("ctrl+q", "quit", "Quit", priority=True)]
    mode_table: tuple[modes.Mode, ...] = modes.MODES  # what the mode bar shows

    # (state, step, total, text); state is "loading", "ready" or "failed".
    model_status: reactive[tuple[str, int, int, str]] = reactive(("loading", 0, 2, "starting…"))
    pair_counts: reactive[tuple[int, int, int]] = reactive((0, 0, 0))  # train, valid, ties/skips

    def __init__(
        self,
        workspace: str | Path | None = None,
        model: str | None = None,
        adapter_path: str | Path | None = None,
        *,
        settings: SampleSettings | None = None,
        prompts: str | Path | None = None,
        judge: str | None = None,
        rubric: str | None = None,
        per_round: int | None = None,
        train_settings: dict | None = None,
        worker_factory: WorkerFactory = ModelWorker,
        judge_factory: Callable[..., JudgeWorker] = JudgeWorker,
    ) -> None:
        """Opens the store (and reads `prompts`) right away, so a bad workspace or prompt file fails before the
        terminal is taken over.

        `settings` are the initial sampling settings; `prompts` a prompt file the Label screen works through;
        `judge` a judge SPEC (`mlx_dpo.online.judges.load_judge`; "human" or None: no program judge) whose
        choice the Label screen shows as a suggestion; `per_round` starts a round after every K labels, with
        `train_settings` (round settings by name) filled in on the Train screen. `worker_factory(model,
        adapter_path, report)` and `judge_factory(spec, rubric, report)` build the workers (tests may wrap them).
        """
        super().__init__()
        workspace = Path(workspace) if workspace is not None else PreferenceStore.default_workspace()
        self.store = PreferenceStore(workspace)  # MlxDpoError on problems
        try:
            self.initial_queue = PromptQueue.open(prompts) if prompts is not None else None
        except QueueError:  # an MlxDpoError naming the file and line
            self.store.close()
            raise
        if per_round is not None and per_round < 1:
            self.store.close()
            raise MlxDpoError(f"per-round must be at least 1 (got {per_round})")
        self.per_round = per_round
        self.train_settings = dict(train_settings or {})
        self.labels_since_round = 0
        self.workspace_label = str(workspace)
        self.initial_settings = settings or SampleSettings()
        self.model_error: str | None = None
        self.sampler: str | None = None
        self.notices: list[tuple[str, str]] = []  # (severity, text) of every notification, newest last
        self.worker = worker_factory(model, adapter_path, self._worker_event)
        if self.train_settings.get("chat_template") is not None:  # the model's template for sampling, too
            self.worker.chat_template = str(self.train_settings["chat_template"])
        self.judge = judge_factory(judge, rubric, self._worker_event) if is_program_judge(judge) else None
        self.judge_name: str | None = None  # once the judge is loaded
        self.set_reactive(MlxDpoApp.model_status, ("loading", 0, 2, f"loading {self.worker.name}…"))
        self._label_screen: Screen | None = None  # set on mount: the model thread must not create screens
        self.compare_ids: set[int] = set()  # worker request ids of the Compare screen
        self.version_label = Path(adapter_path).name if adapter_path else "base"  # what sampling uses
        self._previous_version_label = self.version_label
        self.training: TrainingProcess | None = None  # the running round, if any
        self.created_at = time.perf_counter()
        self.first_screen_at: float | None = None  # perf_counter() when the first screen had been drawn

    # --- lifecycle ---

    def on_mount(self) -> None:
        self._label_screen = self.get_screen("label")
        self.switch_mode(modes.FIRST.name)
        self.store_changed()

    def first_screen_drawn(self) -> None:
        """Called by the Label screen after its first refresh: only now start loading the model, so the
        model thread's imports and weight loading never delay the first screen."""
        if self.first_screen_at is None:
            self.first_screen_at = time.perf_counter()
            self.worker.start()
            if self.judge is not None:
                self.judge.start()

    def on_unmount(self) -> None:
        if self.training is not None and self.training.running:
            self.training.cancel()  # the child stops before its next step
            self.training.join(10)
        self.worker.stop(timeout=2.0)  # a generation stops at its next token; a load cannot be interrupted
        if self.judge is not None:
            self.judge.stop(timeout=2.0)
        self.store.close()

    # --- the model worker's events ---

    def _worker_event(self, event: Event) -> None:
        """Called on the model thread: a sampling event goes to the screen that asked for it (Label, or
        Compare for its requests), the rest to the app."""
        target: App | Screen | None = self
        if isinstance(event, SAMPLE_EVENTS):
            # A comparison (Compare screen: installed, since it asked) or a Label sample.
            target = self.get_screen("compare") if event.request_id in self.compare_ids else self._label_screen
        elif isinstance(event, Suggestion):
            target = self._label_screen
        elif isinstance(event, REVIEW_EVENTS):
            target = self.get_screen("data")  # installed: it asked
        if target is not None:
            target.post_message(WorkerEvent(event))  # thread-safe: queued on the event loop

    def on_worker_event(self, message: WorkerEvent) -> None:
        """The model's state; sampling and training events are the screens' (those that bubble up are ignored)."""
        match message.event:
            case LoadProgress(step=step, total=total, text=text) if self.model_state == "loading":
                self.model_status = ("loading", step, total, text)
            case ModelReady(name=name, sampler=sampler, note=note):
                self.sampler = sampler
                self.model_status = ("ready", 2, 2, f"model ready: {name}" + (f" · {note}" if note else ""))
            case LoadFailed(error=error):
                self.model_error = error
                self.model_status = ("failed", 0, 2, f"model failed to load: {error}")
                self.notify_error(error, title="Model failed to load", timeout=15)
            case AdapterFailed(error=error):
                self.version_label = self._previous_version_label
                self.model_status = ("ready", 2, 2, f"model ready: {self.worker.name}")
                self.notify_error(error, title="Cannot switch the adapter")
            case JudgeReady(name=name):
                self.judge_name = name
                self._label_screen.judge_ready()
            case JudgeFailed(error=error):
                self.judge = None
                self.notify_error(
                    f"{error}. Label on without suggestions.", title="The judge failed to load", timeout=15
                )
                self._label_screen.judge_ready()

    @property
    def model_state(self) -> str:
        return self.model_status[0]

    # --- training rounds and versions (Train and Compare screens) ---

    def start_training(self, settings: dict, report: Callable[[dict], None]) -> TrainingProcess:
        """Run one round in a child process (`tui.workers.TrainingProcess`); `report(dict)` is called on a
        reader thread for each of its events."""
        self.training = TrainingProcess(str(self.store.workspace), self.worker.model, settings, report)
        self.training.start()
        return self.training

    def switch_adapter(self, path: str | Path | None, label: str) -> None:
        """Sample from base + the adapter at `path` (None: the base alone) from now on."""
        self._previous_version_label = self.version_label
        self.version_label = label
        self.model_status = ("loading", 1, 2, f"switching to {label}…")
        self.worker.set_adapter(path)

    def current_version_label(self) -> str:
        return self.version_label

    def labeled(self) -> None:
        """A label was saved on the Label screen; with `per_round=K`, the K-th since the last round starts one."""
        self.labels_since_round += 1
        if self.per_round is None or self.labels_since_round < self.per_round:
            return
        if self.training is not None and self.training.running:
            return  # the next label after this round ends starts the next one
        self.labels_since_round = 0
        self.notify(f"{self.per_round} new label{'s' * (self.per_round != 1)}: training a round", timeout=4)
        self.call_later(self.run_in_mode, "train", "auto_round")

    def compare_request(self, messages: list[dict], settings: SampleSettings, adapters) -> int:
        request_id = self.worker.compare(messages, settings, adapters)
        self.compare_ids.add(request_id)
        return request_id

    # --- shared services for the screens ---

    def store_changed(self) -> None:
        """Refresh the counts every mode bar shows (after any change to the store)."""
        try:
            stats = self.store.stats()
        except MlxDpoError as e:
            self.notify_error(str(e), title="Cannot read the store")
            return
        self.pair_counts = (stats["by_split"].get("train", 0), stats["by_split"].get("valid", 0), stats["skips"])

    def notify(self, message: str, *, title: str = "", severity="information", timeout=None, markup: bool = False):
        """As App.notify, but plain text by default (messages quote user text and paths) and remembered."""
        self.notices.append((severity, f"{title}: {message}" if title else message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def notify_error(self, message: str, *, title: str = "", timeout: float | None = 8) -> None:
        self.notify(message, title=title, severity="error", timeout=timeout)

    def notify_warning(self, message: str, *, title: str = "", timeout: float | None = 4) -> None:
        self.notify(message, title=title, severity="warning", timeout=timeout)

    # --- command palette: every mode, and every described binding of every mode ---

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode in modes.MODES:
            yield SystemCommand(
                f"Go to {mode.title}", f"switch to the {mode.title} screen", partial(self.switch_mode, mode.name)
            )
        for mode in modes.MODES:
            for binding in mode.screen.BINDINGS:
                if isinstance(binding, Binding) and binding.tooltip:
                    yield SystemCommand(
                        f"{mode.title}: {binding.tooltip}",
                        f"key: {binding.key}",
                        partial(self.run_in_mode, mode.name, binding.action),
                    )

    async def run_in_mode(self, mode: str, action: str) -> None:
        await self.switch_mode(mode)
        await self.screen.run_action(action)
