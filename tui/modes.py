"""The app's six modes, in one table: each one's name, title, function key and screen class.

Everything that lists the modes reads this table: the app's screens, Textual modes and F-key bindings
(`tui.app`), the mode bar on top of every screen (`tui.widgets.ModeBar`, through `app.mode_table`) and
the command palette's "Go to ..." commands. Adding a mode is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.screen import Screen

from tui.screens import CompareScreen, DataScreen, ExportScreen, LabelScreen, TrainScreen, WriteScreen


@dataclass(frozen=True)
class Mode:
    name: str  # the Textual mode and screen name: app.switch_mode(name), app.get_screen(name)
    title: str
    key: str  # the key that switches to it, on every screen
    screen: type[Screen]

    @property
    def label(self) -> str:
        """What the mode bar's button says: "F1 Label"."""
        return f"{self.key.upper()} {self.title}"


MODES: tuple[Mode, ...] = (
    Mode("label", "Label", "f1", LabelScreen),
    Mode("write", "Write", "f2", WriteScreen),
    Mode("data", "Data", "f3", DataScreen),
    Mode("train", "Train", "f4", TrainScreen),
    Mode("compare", "Compare", "f5", CompareScreen),
    Mode("export", "Export", "f6", ExportScreen),
)
FIRST = MODES[0]  # the mode the app opens in


def mode_bindings() -> list[Binding]:
    """One priority binding per mode, so its key works in every screen and editor. Hidden from the footer:
    every screen's mode bar shows them."""
    return [Binding(m.key, f"switch_mode('{m.name}')", m.title, priority=True, show=False) for m in MODES]
