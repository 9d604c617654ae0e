"""The app's structure, read from its source and its imports (no terminal, no model).

- The app reaches the library through `mlx_dpo.api` (and its event, settings and error types); only
  `tui.workers` uses the API's heavy names (the import rules themselves are in tests/test_layout.py).
- Importing the app and the API loads neither mlx nor mlx_lm nor the library's model, training or export
  code: the first screen never waits for them.
- The Train screen shows every field's label whole, down to an 80-column terminal.
- The six modes are one table (`tui.modes.MODES`): the app's screens, modes, keys, mode bar and palette
  follow it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tui import modes
from tui.app import MlxDpoApp
from tui.workers import ModelWorker

REPO = Path(__file__).resolve().parent.parent
TUI = REPO / "tui"
# The library modules the UI may use directly (tests/test_layout.py): none of them loads model code.
MLX_FREE = (
    "mlx_dpo.api",
    "mlx_dpo.errors",
    "mlx_dpo.events",
    "mlx_dpo.metric_names",
    "mlx_dpo.options",
    "mlx_dpo.settings",
)


def test_importing_the_app_loads_no_model_code():
    code = (
        f"import sys, tui.app, tui.workers, {', '.join(MLX_FREE)}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm') or m.startswith(("
        "'mlx_dpo.models', 'mlx_dpo.training', 'mlx_dpo.export', 'mlx_dpo.online.judges'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_modes_are_one_table():
    names = [m.name for m in modes.MODES]
    assert names == ["label", "write", "data", "train", "compare", "export"]
    assert list(MlxDpoApp.MODES) == list(MlxDpoApp.SCREENS) == names
    assert [MlxDpoApp.SCREENS[m.name] for m in modes.MODES] == [m.screen for m in modes.MODES]
    keys = {b.key: b.action for b in MlxDpoApp.BINDINGS}
    assert all(keys[m.key] == f"switch_mode('{m.name}')" for m in modes.MODES)
    assert [m.label for m in modes.MODES][:2] == ["F1 Label", "F2 Write"]


class IdleWorker(ModelWorker):
    """A model worker that never starts: the app's shell alone, without a model."""

    def start(self) -> None:
        pass


@pytest.mark.anyio
async def test_every_mode_is_reached_by_its_key_its_button_and_the_palette(workspace):
    app = MlxDpoApp(workspace, worker_factory=IdleWorker)
    async with app.run_test(size=(120, 36)) as pilot:
        for mode in reversed(modes.MODES):
            await pilot.press(mode.key)
            assert app.current_mode == mode.name and isinstance(app.screen, mode.screen)
        for mode in modes.MODES:
            await pilot.click(f"#mode-{mode.name}")
            assert app.current_mode == mode.name
            bar = [str(b.label) for b in app.screen.query(".mode-button")]
            assert bar == [m.label for m in modes.MODES]
            assert [str(b.label) for b in app.screen.query(".mode-button.-current")] == [mode.label]
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert [t for t in titles if t.startswith("Go to ")] == [f"Go to {m.title}" for m in modes.MODES]


@pytest.mark.anyio
@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_the_train_screen_shows_every_field_label_whole(workspace, size):
    app = MlxDpoApp(workspace, worker_factory=IdleWorker)
    async with app.run_test(size=size) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        labels = list(app.screen.query(".train-field Label"))
        assert len(labels) == 10
        for label in labels:  # the field (a label over its input) clips what does not fit in it
            text, field = str(label.render()), label.parent.region
            assert field.width >= len(text) and field.right <= size[0], (text, field)
