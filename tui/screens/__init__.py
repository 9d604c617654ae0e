"""The app's screens, one per mode; `tui.modes` lists the six modes (name, title, key, screen) once."""

from tui.screens.compare import CompareScreen
from tui.screens.data import DataScreen
from tui.screens.export import ExportScreen
from tui.screens.label import LabelScreen
from tui.screens.train import TrainScreen
from tui.screens.write import WriteScreen

__all__ = ["CompareScreen", "DataScreen", "ExportScreen", "LabelScreen", "TrainScreen", "WriteScreen"]
