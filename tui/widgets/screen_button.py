"""A screen's button: the mouse's way to run what a key runs.

`ScreenButton("1 better", "pick(1)", id="pick-1")` runs the screen's `action_pick(1)`, exactly as the
`1` key's binding does (Textual's `Button(action=...)`: no button-id table to keep in step with the
bindings). It never takes the focus: keys drive the screens, and a focused button would swallow Enter
and Space. Dialogs use plain `Button`s, which they focus.
"""

from __future__ import annotations

from textual.widgets import Button
from textual.widgets.button import ButtonVariant


class ScreenButton(Button):
    can_focus = False

    def __init__(self, label: str, action: str, *, id: str, variant: ButtonVariant = "default") -> None:
        # "screen.": the action runs on the screen shown, which is the button's own when it is clicked.
        super().__init__(label, variant, id=id, compact=True, action=f"screen.{action}")
