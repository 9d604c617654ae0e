"""One sampled answer, streamed in (Label and Compare screens)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

# Control characters a model may emit would corrupt the terminal: show them as their Unicode pictures.
_VISIBLE = {c: 0x2400 + c for c in range(32) if chr(c) not in "\n\t"} | {0x7F: 0x2421}


def visible(text: str) -> str:
    return text.translate(_VISIBLE)


class AnswerPane(VerticalScroll):
    """Focusable, so it can be scrolled with the keyboard; `text` is the answer as the model wrote it."""

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
        self._show()
        self.border_subtitle = subtitle

    def append(self, text: str) -> None:
        self.text += text
        self._show()
        self.scroll_end(animate=False)

    def set_title(self, extra: str = "") -> None:
        self.border_title = f"{self.slot} · answer {self.slot}" + (f" · {extra}" if extra else "")

    def _show(self) -> None:
        self.query_one(".answer-text", Static).update(Text(visible(self.text)))
