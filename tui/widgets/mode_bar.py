"""The top bar of every screen: one button per mode (the current one highlighted) and the store's counts."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Static


class ModeBar(Horizontal):
    """The modes come from the app's `mode_table` (`tui.modes.MODES`): the bar does not import the screens,
    which all compose it. The counts follow the app's `pair_counts`."""

    def __init__(self, current: str) -> None:
        super().__init__(classes="mode-bar")
        self.current = current

    def compose(self) -> ComposeResult:
        for mode in self.app.mode_table:
            button = Button(
                mode.label,
                id=f"mode-{mode.name}",
                classes="mode-button",
                compact=True,
                action=f"app.switch_mode('{mode.name}')",
            )
            button.can_focus = False  # the bar is for the mouse; the keys are the F-keys on the buttons
            if mode.name == self.current:
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
