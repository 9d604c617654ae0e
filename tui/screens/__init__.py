"""The app's three modes, one screen each."""

from tui.screens.data import DataScreen
from tui.screens.label import LabelScreen
from tui.screens.write import WriteScreen

__all__ = ["DataScreen", "LabelScreen", "WriteScreen"]
