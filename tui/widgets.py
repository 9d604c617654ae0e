"""Small widgets the screens share: the mode bar, the model status line, an answer pane."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, ProgressBar, Static

MODES = (("label", "F1 Label"), ("write", "F2 Write"), ("data", "F3 Data"), ("train", "F4 Train"),
         ("compare", "F5 Compare"), ("export", "F6 Export"))


class ModeBar(Horizontal):
    """The top bar of every screen: one button per mode (the current one highlighted) and store counts."""

    def __init__(self, current: str) -> None:
        super().__init__(classes="mode-bar")
        self.current = current

    def compose(self) -> ComposeResult:
        for mode, label in MODES:
            button = Button(label, id=f"mode-{mode}", classes="mode-button", compact=True)
            button.can_focus = False  # the bar is for the mouse; keys are F1-F3
            if mode == self.current:
                button.add_class("-current")
            yield button
        yield Static("", classes="mode-bar-counts")

    def on_mount(self) -> None:
        self.watch(self.app, "pair_counts", self._show_counts)

    def _show_counts(self, counts: tuple[int, int, int]) -> None:
        train, valid, skips = counts
        workspace = getattr(self.app, "workspace_label", "")
        self.query_one(".mode-bar-counts", Static).update(
            Text(f"{train} train · {valid} valid · {skips} ties · {workspace}")
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        mode = (event.button.id or "").removeprefix("mode-")
        self.app.switch_mode(mode)


class ModelStatus(Horizontal):
    """Which model, and whether it is still loading: a progress bar and a line of text."""

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=2, show_eta=False, show_percentage=False, id="model-progress")
        yield Static("", id="model-text")

    def on_mount(self) -> None:
        self.watch(self.app, "model_status", self._show)

    def _show(self, status: tuple[str, int, int, str]) -> None:
        state, step, total, text = status
        bar = self.query_one(ProgressBar)
        bar.update(total=total, progress=step)
        bar.display = state == "loading"
        self.set_class(state == "loading", "-loading")
        self.set_class(state == "ready", "-ready")
        self.set_class(state == "failed", "-failed")
        mark = {"loading": "", "ready": "● ", "failed": "✗ "}[state]
        self.query_one("#model-text", Static).update(Text(mark + text))


# Control characters a model may emit would corrupt the terminal: show them as their Unicode pictures.
_VISIBLE = {c: 0x2400 + c for c in range(32) if chr(c) not in "\n\t"} | {0x7F: 0x2421}


def visible(text: str) -> str:
    return text.translate(_VISIBLE)


class AnswerPane(VerticalScroll):
    """One sampled answer, streamed in; focusable so it can be scrolled with the keyboard."""

    can_focus = True

    def __init__(self, slot: int, **kwargs) -> None:
        super().__init__(classes="answer-pane", **kwargs)
        self.slot = slot
        self.text = ""
        self.border_title = f"{slot} · answer {slot}"

    def compose(self) -> ComposeResult:
        yield Static("", classes="answer-text", markup=False)

    def set_text(self, text: str, subtitle: str = "") -> None:
        self.text = text
        self.query_one(".answer-text", Static).update(Text(visible(text)))
        self.border_subtitle = subtitle

    def append(self, text: str) -> None:
        self.text += text
        self.query_one(".answer-text", Static).update(Text(visible(self.text)))
        self.scroll_end(animate=False)

    def set_title(self, extra: str = "") -> None:
        self.border_title = f"{self.slot} · answer {self.slot}" + (f" · {extra}" if extra else "")
