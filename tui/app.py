"""The mlx-dpo terminal app: label sampled answers, write pairs, manage the preference store.

Thin on purpose: it opens the store, starts the model worker, defines the three modes (Label, Write,
Data; F1-F3) and the command palette, and turns the worker's events into Textual messages.
The screens live in `tui.screens`, shared widgets in `tui.widgets`, dialogs in `tui.modals`,
styles in the `.tcss` files next to this module.

Threads: Textual's event loop (UI + store writes), the model thread (`tui.backend.ModelWorker`:
loads the model, then generates; MLX arrays never leave it) and short-lived thread workers for
file import/export.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.store import PreferenceStore
from tui import messages as msg
from tui.backend import ModelWorker, SampleSettings
from tui.screens import DataScreen, LabelScreen, WriteScreen
from tui.screens.compare import CompareScreen
from tui.screens.train import TrainScreen
from tui.screens.export import ExportScreen

WorkerFactory = Callable[..., ModelWorker]
MODE_TITLES = {"label": "Label", "write": "Write", "data": "Data", "train": "Train", "compare": "Compare", "export": "Export"}


class MlxDpoApp(App):
    TITLE = "mlx-dpo"
    CSS_PATH = ["app.tcss", "label.tcss", "write.tcss", "data.tcss", "modals.tcss", "train.tcss", "compare.tcss", "export.tcss"]
    SCREENS = {"label": LabelScreen, "write": WriteScreen, "data": DataScreen, "train": TrainScreen, "compare": CompareScreen, "export": ExportScreen}
    MODES = {"label": "label", "write": "write", "data": "data", "train": "train", "compare": "compare", "export": "export"}
    BINDINGS = [
        # Shown on every screen's mode bar rather than in the footer.
        Binding("f1", "switch_mode('label')", "Label", priority=True, show=False),
        Binding("f2", "switch_mode('write')", "Write", priority=True, show=False),
        Binding("f3", "switch_mode('data')", "Data", priority=True, show=False),
        Binding("f4", "switch_mode('train')", "Train", priority=True, show=False),
        Binding("f5", "switch_mode('compare')", "Compare", priority=True, show=False),
        Binding("f6", "switch_mode('export')", "Export", priority=True, show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

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
        worker_factory: WorkerFactory = ModelWorker,
    ) -> None:
        """Opens the store right away, so a bad workspace fails before the terminal is taken over.

        `settings` are the initial sampling settings; `worker_factory(model, adapter_path, report)` builds the
        model worker (tests may wrap the real one).
        """
        super().__init__()
        workspace = Path(workspace) if workspace is not None else PreferenceStore.default_workspace()
        self.store = PreferenceStore(workspace)  # MlxDpoError on problems
        self.workspace_label = str(workspace)
        self.initial_settings = settings or SampleSettings()
        self.model_error: str | None = None
        self.sampler: str | None = None
        self.notices: list[tuple[str, str]] = []  # (severity, text) of every notification, newest last
        self.worker = worker_factory(model, adapter_path, self._backend_event)
        self.set_reactive(MlxDpoApp.model_status, ("loading", 0, 2, f"loading {self.worker.name}…"))
        self._label_screen: LabelScreen | None = None
        self.compare_ids: set[int] = set()  # worker request ids of the Compare screen
        self.version_label = Path(adapter_path).name if adapter_path else "base"  # what sampling uses
        self.training = None  # the running tui.training.TrainingProcess, if any
        self.created_at = time.perf_counter()
        self.first_screen_at: float | None = None  # perf_counter() when the first screen had been drawn

    # --- lifecycle ---

    def on_mount(self) -> None:
        self._label_screen = self.get_screen("label")
        self.switch_mode("label")
        self.store_changed()

    def first_screen_drawn(self) -> None:
        """Called by the Label screen after its first refresh: only now start loading the model, so the
        model thread's imports and weight loading never delay the first screen."""
        if self.first_screen_at is None:
            self.first_screen_at = time.perf_counter()
            self.worker.start()

    def on_unmount(self) -> None:
        if self.training is not None and self.training.running:
            self.training.cancel()  # the child stops before its next step
            self.training.join(10)
        self.worker.stop(timeout=2.0)  # a generation stops at its next token; a load cannot be interrupted
        self.store.close()

    # --- the model worker's events (called on the model thread) ---

    def _backend_event(self, event) -> None:
        message = msg.to_message(event)
        target = self._label_screen if isinstance(message, msg.SAMPLE_MESSAGES) else self
        if isinstance(message, msg.SAMPLE_MESSAGES) and message.request_id in self.compare_ids:
            target = self.get_screen("compare")  # a comparison (Compare screen), not a Label sample
        if target is not None:
            target.post_message(message)  # thread-safe: queued on the event loop

    @property
    def model_state(self) -> str:
        return self.model_status[0]

    def on_load_progress(self, message: msg.LoadProgress) -> None:
        if self.model_state == "loading":
            self.model_status = ("loading", message.step, message.total, message.text)

    def on_model_ready(self, message: msg.ModelReady) -> None:
        self.sampler = message.sampler
        self.model_status = ("ready", 2, 2, f"model ready: {message.name}")

    def on_load_failed(self, message: msg.LoadFailed) -> None:
        self.model_error = message.error
        self.model_status = ("failed", 0, 2, f"model failed to load: {message.error}")
        self.notify_error(message.error, title="Model failed to load", timeout=15)

    def on_adapter_failed(self, message: msg.AdapterFailed) -> None:
        self.version_label = self._previous_version_label
        self.model_status = ("ready", 2, 2, f"model ready: {self.worker.name}")
        self.notify_error(message.error, title="Cannot switch the adapter")

    # --- training rounds and versions (Train and Compare screens) ---

    def start_training(self, settings: dict, report):
        """Run one round (mlx_dpo.rounds) in a child process; `report(dict)` is called on a reader thread."""
        from tui.training import TrainingProcess

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

    # --- command palette: every binding of every mode, plus mode switching ---

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, title in MODE_TITLES.items():
            yield SystemCommand(f"Go to {title}", f"switch to the {title} screen", partial(self.switch_mode, mode))
        for mode, title in MODE_TITLES.items():
            screen_class = self.SCREENS[mode]
            for binding in screen_class.BINDINGS:
                if not isinstance(binding, Binding) or not binding.tooltip:
                    continue
                yield SystemCommand(
                    f"{title}: {binding.tooltip}",
                    f"key: {binding.key}",
                    partial(self.run_in_mode, mode, binding.action),
                )

    async def run_in_mode(self, mode: str, action: str) -> None:
        await self.switch_mode(mode)
        await self.screen.run_action(action)
