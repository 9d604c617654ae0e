"""The one-line status of a screen (under its buttons): plain text, coloured by what it reports.

`show(text, style)` replaces the line: the text is never read as markup (it quotes prompts, answers,
paths and errors), and `style` ("saved", "error", "warning" or "" for plain) becomes the one CSS class
`-saved` / `-error` / `-warning` that app.tcss colours. `text` is what is shown now, for callers that
extend the line and for the tests.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusLine(Static):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.text = ""

    def show(self, text: str, style: str = "") -> None:
        self.text = text
        self.update(Text(text))
        self.set_classes(f"-{style}" if style else "")
