"""Train: run an incremental round on the untrained pairs, watch it, and pick the version to sample from.

The round runs in a child process (`tui.workers.TrainingProcess`): the UI stays responsive and the
model worker's MLX streams are never shared. Its events arrive as `WorkerEvent` messages carrying the
library's event dataclasses (`mlx_dpo.events`), ending with a RoundEnded or a RoundFailed.
When a round finishes, the app switches the sampling model to the new version.

The versions table answers "did it get better?": beside each round's training numbers, its held-out
numbers as the round measured them (`HELDOUT_COLUMNS`: preference accuracy on validation pairs, KL to the base in
nats per answer, a judge's mean score and win rates, the share of repeated 3-grams and of answers cut at max
tokens), "–" where a round could not measure one; the base row shows the base's own held-out numbers. Then
whether the round was kept and why (mlx_dpo.training.acceptance): a rejected round is not sampled from or built
on, and `k` keeps the selected one anyway (a person's word over the rule's, recorded as such).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, ProgressBar, Sparkline, Static

from mlx_dpo.api import GroupSettings
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Cancelled, Event, RoundEnded, RoundFailed, Status, StepMetrics
from mlx_dpo.metric_names import (
    ACCURACY,
    HELDOUT,
    HELDOUT_ACCURACY,
    HELDOUT_BASE,
    HELDOUT_KL,
    HELDOUT_REPETITION,
    HELDOUT_SCORE,
    HELDOUT_UNFINISHED,
    HELDOUT_WIN_VS_BASE,
    HELDOUT_WIN_VS_PREVIOUS,
    LOSS,
    MARGIN,
    NEW_PAIRS,
    PEAK_MEMORY_GB,
    REF_HITS,
    REF_MISSES,
    TOKENS_PER_SECOND,
)
from mlx_dpo.options import SettingError, check, shown
from mlx_dpo.settings import TRAIN_GROUPS, RoundSettings, round_settings_table
from tui.messages import WorkerEvent
from tui.widgets import ModeBar, ScreenButton, StatusLine
from tui.workers import TrainingProcess

# The round settings the screen offers: (input id, setting name, label, text the field starts with;
# None: the setting's default, blank where the default is "unset"). Parsers, defaults and checks are the
# settings' own (mlx_dpo.settings).
_OFFERED = (
    ("train-loss", "loss_type", "loss (kto: marked answers too)", None),
    ("train-beta", "beta", "β", None),
    ("train-lr", "learning_rate", "learning rate", None),
    ("train-iters", "iters", "steps", ""),  # blank: the round's length follows its data (passes)
    ("train-passes", "passes", "passes (if no steps)", None),
    ("train-batch", "batch_size", "batch size", None),
    ("train-rank", "lora_rank", "LoRA rank", None),
    ("train-layers", "lora_num_layers", "LoRA layers", None),
    ("train-replay", "replay", "replay share", None),
    ("train-method", "method", "dpo or grpo", None),
)
ROUND_SETTINGS = round_settings_table(*TRAIN_GROUPS, RoundSettings, GroupSettings)  # a round's defaults (rpo_alpha...)


def _start_text(name: str, text: str | None) -> str:
    setting = ROUND_SETTINGS[name]
    if text is not None:
        return text
    return "" if setting.default_text else shown(setting.default) or ""


# (input id, label, settings key, parser, text shown at start)
FIELDS = tuple(
    (input_id, label, name, ROUND_SETTINGS[name].parse, _start_text(name, text))
    for input_id, name, label, text in _OFFERED
)


# The versions table's held-out columns: (title, metrics key, digits). The base's are "heldout_base/...".
HELDOUT_COLUMNS = (
    ("acc*", HELDOUT_ACCURACY, 2),
    ("KL*", HELDOUT_KL, 3),
    ("score*", HELDOUT_SCORE, 3),
    ("win prev*", HELDOUT_WIN_VS_PREVIOUS, 2),
    ("win base*", HELDOUT_WIN_VS_BASE, 2),
    ("rep*", HELDOUT_REPETITION, 2),
    ("cut*", HELDOUT_UNFINISHED, 2),
)
VERSION_COLUMNS = (
    "version",
    "status",
    "pairs",
    "new",
    "loss",
    "accuracy",
    "margin",
    "ref hit/miss",
    *(title for title, _key, _digits in HELDOUT_COLUMNS),
    "kept",
    "why",
)
PLOTS = ((LOSS, "loss"), (MARGIN, "reward margin"), (ACCURACY, "accuracy"))  # (metric, title) of each live plot
KEPT = {"accepted": "✓ yes", "rejected": "✗ no", "pending": "… unchecked", None: "✓ yes"}  # None: before the rule


class TrainScreen(Screen):
    BINDINGS = [
        Binding("ctrl+t", "train", "Train", tooltip="Train a round on the untrained pairs"),
        Binding("c", "cancel", "Cancel", tooltip="Cancel the running round (keeps its last checkpoint)"),
        Binding("v", "use_version", "Use version", tooltip="Sample from the selected version"),
        Binding("b", "use_base", "Use base", tooltip="Sample from the base model (no adapter)"),
        Binding("k", "keep_version", "Keep", tooltip="Keep the selected rejected version (accept it by hand)"),
        Binding("escape", "leave_editor", "Leave editor", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="train-screen")
        self.process: TrainingProcess | None = None
        self.state = "idle"  # idle, training, cancelling
        self.history: dict[str, list[float]] = {key: [] for key, _title in PLOTS}
        self.started_at = 0.0
        self.last_round: RoundEnded | RoundFailed | None = None
        self.return_to: str | None = None  # the mode to go back to when the round ends (a round the app started)
        self.events: list[Event] = []

    def compose(self) -> ComposeResult:
        yield ModeBar("train")
        yield Static("", id="train-summary")
        with Grid(id="train-settings"):
            for input_id, label, _key, _parse, default in FIELDS:
                with Vertical(classes="train-field"):
                    yield Label(label)
                    yield Input(default, id=input_id, compact=True, placeholder="default")
        with Horizontal(id="train-buttons"):
            yield ScreenButton("ctrl+t train", "train", id="train-start", variant="primary")
            yield ScreenButton("c cancel", "cancel", id="train-cancel", variant="error")
            yield ScreenButton("v use version", "use_version", id="train-use")
            yield ScreenButton("b use base", "use_base", id="train-base")
        yield ProgressBar(total=1, show_eta=False, id="train-progress")
        yield StatusLine(id="train-status")
        with Horizontal(id="train-plots"):
            for key, title in PLOTS:
                with Vertical(classes="train-plot"):
                    yield Static(title, classes="train-plot-title", id=f"plot-title-{_slug(key)}")
                    yield Sparkline([], id=f"plot-{_slug(key)}")
        table = DataTable(id="versions", cursor_type="row")
        table.border_title = "versions"
        table.border_subtitle = (
            "* held out: accuracy on valid pairs, KL to the base, judge's own score and win rates, "
            "repeated 3-grams, answers cut at max tokens"
        )
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#versions", DataTable)
        table.add_columns(*VERSION_COLUMNS)
        for input_id, _label, key, _parse, _default in FIELDS:  # the round settings the app was opened with
            if key in self.app.train_settings:
                self.query_one(f"#{input_id}", Input).value = shown(self.app.train_settings[key]) or ""
        self.refresh_rounds()

    def on_screen_resume(self) -> None:
        self.refresh_rounds()

    # --- reading the settings and the store ---

    def settings(self) -> dict:
        """The round settings typed in, by setting name; raises ValueError naming the bad field."""
        out: dict = {}
        typed: dict[str, tuple[str, str]] = {}  # name -> (label, text)
        for input_id, label, key, parse, _default in FIELDS:
            text = self.query_one(f"#{input_id}", Input).value.strip()
            if not text:
                continue
            try:
                out[key] = parse(text)
            except ValueError:
                raise ValueError(f"{label}: not a number ({text!r})") from None
            typed[key] = (label, text)
        try:
            check(out, ROUND_SETTINGS)
        except SettingError as e:
            raise ValueError(e.message(*typed[e.name])) from None
        if "iters" in out:
            out.pop("passes", None)
        offered = {key for _id, _label, key, _parse, _default in FIELDS}
        return {**{k: v for k, v in self.app.train_settings.items() if k not in offered}, **out}

    def refresh_rounds(self) -> None:
        store = self.app.store
        try:
            untrained = len(store.untrained_pairs())
            rounds = store.list_rounds()
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Cannot read the store")
            return
        self.rounds = rounds
        current = self.app.current_version_label()
        self.query_one("#train-summary", Static).update(
            Text(
                f"{untrained} untrained pair{'s' * (untrained != 1)} · {len(rounds)} round(s) · sampling from {current}"
            )
        )
        table = self.query_one("#versions", DataTable)
        row = table.cursor_row
        table.clear()
        base = next((r.metrics for r in reversed(rounds) if any(k.startswith(HELDOUT_BASE) for k in r.metrics)), {})
        table.add_row("base", "", "", "", "", "", "", "", *_heldout(base, HELDOUT_BASE), "", "", key="base")
        for r in rounds:
            m = r.metrics
            refs = f"{m[REF_HITS]}/{m[REF_MISSES]}" if REF_HITS in m else ""
            table.add_row(
                r.label,
                r.status,
                str(len(r.pair_ids)),
                str(m.get(NEW_PAIRS, "")),
                _fmt(m.get(LOSS)),
                _fmt(m.get(ACCURACY)),
                _fmt(m.get(MARGIN)),
                refs,
                *_heldout(m),
                KEPT.get(r.decision, "") if r.status == "finished" else "",
                r.reason or "",
                key=str(r.version),
            )
        table.move_cursor(row=row if 0 < row <= len(rounds) else len(rounds))

    # --- actions ---

    def action_train(self) -> None:
        if self.state != "idle":
            self.app.notify_warning("A round is already running.")
            return
        try:
            settings = self.settings()
        except ValueError as e:
            self.app.notify_error(str(e), title="Not started")
            return
        if settings.get("method") == "grpo" and not any(g.varied for g in self.app.store.ratings.untrained()):
            self.app.notify_warning(
                "No untrained rated answers that differ: rate some first (Label, m).", title="Nothing to train"
            )
            return
        if settings.get("method") != "grpo" and not self.app.store.untrained_pairs():
            self.app.notify_warning("No untrained pairs: label some first.", title="Nothing to train")
            return
        for values in self.history.values():
            values.clear()
        self._plots()
        self.events = []
        self.last_round = None
        self.state = "training"
        self.started_at = time.monotonic()
        self.query_one("#train-progress", ProgressBar).update(total=None, progress=0)
        self._status("starting the training process…")
        self.process = self.app.start_training(settings, self.post_message_from_child)
        self._buttons()

    def action_auto_round(self) -> None:
        """A round the app starts after every K labels (`MlxDpoApp(per_round=K)`): it trains here, then the
        Label screen comes back, sampling from the new version."""
        self.action_train()
        if self.state == "training":
            self.return_to = "label"
        else:
            self.app.switch_mode("label")

    def post_message_from_child(self, event: Event) -> None:  # called on the reader thread
        self.post_message(WorkerEvent(event))

    def action_cancel(self) -> None:
        if self.state != "training" or self.process is None:
            return
        self.process.cancel()
        self.state = "cancelling"
        self._status("cancelling after the current step…")
        self._buttons()

    def action_use_version(self) -> None:
        table = self.query_one("#versions", DataTable)
        if table.row_count == 0:
            return
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        if key == "base":
            self.action_use_base()
            return
        round_ = next(r for r in self.rounds if str(r.version) == key)
        self.app.switch_adapter(round_.adapter_path, round_.label)
        self.refresh_rounds()

    def action_keep_version(self) -> None:
        """Keep the selected version although its round's check rejected it: later rounds build on it."""
        round_ = self._selected_round()
        if round_ is None or round_.status != "finished" or round_.kept:
            self.app.notify_warning("Select a rejected (or unchecked) version to keep it.")
            return
        try:
            self.app.store.decide_round(
                round_.version, True, f"kept by a person (the rule said: {round_.reason or 'nothing'})"
            )
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Not kept")
            return
        self._status(f"{round_.label} kept: later rounds build on it; v to sample from it", "saved")
        self.refresh_rounds()

    def _selected_round(self):
        table = self.query_one("#versions", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return next((r for r in self.rounds if str(r.version) == key), None)

    def action_use_base(self) -> None:
        self.app.switch_adapter(None, "base")
        self.refresh_rounds()

    def action_leave_editor(self) -> None:
        self.set_focus(None)

    # --- the child's events ---

    def on_worker_event(self, message: WorkerEvent) -> None:
        message.stop()  # the round's events are this screen's alone
        event = message.event
        self.events.append(event)
        match event:
            case Status(message=text):
                self._status(text)
            case StepMetrics():
                self._step(event)
            case Cancelled(step=step):
                self._status(f"cancelled after step {step}")
            case RoundEnded() | RoundFailed():
                self._round_ended(event)

    def _step(self, event: StepMetrics) -> None:
        step, total, m = event.step, event.total_steps, event.metrics
        self.query_one("#train-progress", ProgressBar).update(total=total, progress=step)
        for key, values in self.history.items():
            if key in m:
                values.append(float(m[key]))
        self._plots()
        elapsed = time.monotonic() - self.started_at
        eta = elapsed / step * (total - step) if step else 0
        self._status(
            f"step {step}/{total} · ETA {eta:.0f} s · loss {m.get(LOSS, 0):.4f} · "
            f"margin {m.get(MARGIN, 0):.4f} · acc {m.get(ACCURACY, 0):.2f} · "
            f"{m.get(TOKENS_PER_SECOND, 0):.0f} tok/s · {m.get(PEAK_MEMORY_GB, 0):.2f} GB"
        )

    def _round_ended(self, event: RoundEnded | RoundFailed) -> None:
        self.last_round = event
        self.state = "idle"
        self.process = None
        self._buttons()
        if isinstance(event, RoundFailed):
            self._status(f"failed: {event.error}", "error")
            self.app.notify_error(event.error, title="Training failed")
        elif event.status == "finished" and event.decision == "rejected":
            version = f"v{event.version}"
            self._status(
                f"round {version} rejected ({event.reason}) · still sampling from "
                f"{self.app.current_version_label()} · k keeps it anyway",
                "warning",
            )
            self.app.notify_warning(f"{version} not kept: {event.reason}", title="Rejected")
        elif event.status == "finished":
            version = f"v{event.version}"
            self._status(f"round {version} finished · sampling from {version} now", "saved")
            self.app.notify(f"round {version} finished; sampling from {version}", title="Trained", timeout=4)
            self.app.switch_adapter(event.adapter_path, version)
        else:
            self._status(
                f"round v{event.version} cancelled; its last checkpoint is kept in {event.adapter_path}", "warning"
            )
        self.refresh_rounds()
        self.app.store_changed()
        if self.return_to is not None:
            mode, self.return_to = self.return_to, None
            self.app.switch_mode(mode)

    # --- display ---

    def _plots(self) -> None:
        for key, values in self.history.items():
            self.query_one(f"#plot-{_slug(key)}", Sparkline).data = list(values)
            last = f" {values[-1]:.4f}" if values else ""
            title = dict(PLOTS)[key]
            self.query_one(f"#plot-title-{_slug(key)}", Static).update(Text(title + last))

    def _status(self, text: str, style: str = "") -> None:
        self.query_one(StatusLine).show(text, style)

    def _buttons(self) -> None:
        self.query_one("#train-start", Button).disabled = self.state != "idle"
        self.query_one("#train-cancel", Button).disabled = self.state != "training"


def _slug(key: str) -> str:
    return key.replace("/", "-")


def _heldout(metrics: dict, prefix: str = HELDOUT) -> list[str]:
    """A version's held-out cells; "–" for a number the round did not (or could not) measure."""
    cells = []
    for _title, key, digits in HELDOUT_COLUMNS:
        value = metrics.get(prefix + key.removeprefix(HELDOUT))
        cells.append("–" if value is None else f"{value:.{digits}f}")
    return cells


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
