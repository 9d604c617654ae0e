"""Snapshots of each screen (pytest-textual-snapshot). Regenerate after a deliberate UI change with
`pytest tests/test_tui_snapshots.py --snapshot-update` and review the SVGs in tests/__snapshots__/.

Deterministic by construction: fixed terminal size, a relative workspace path, the (tiny, real) model
loaded before the shot, fixed text, sampled output only with a fixed seed, no elapsed times, no notifications
on screen.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import model_ready, type_text, wait_until

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.events import StepMetrics
from tui.app import MlxDpoApp
from tui.messages import WorkerEvent
from tui.modals import ConfirmModal, EditAnswersModal
from tui.workers import SampleSettings

SIZE = (120, 36)


@pytest.fixture
def app(tiny, tmp_path, monkeypatch) -> MlxDpoApp:
    monkeypatch.chdir(tmp_path)  # the mode bar shows the workspace path: keep it the same in every run
    return MlxDpoApp(Path("workspace"), model=str(tiny), settings=SampleSettings(max_tokens=64, seed=7))


async def steady_cursors(pilot) -> None:
    """A blinking cursor would be caught on or off at random: keep it on."""
    for widget in pilot.app.screen.query("TextArea, Input"):
        widget.cursor_blink = False
    await pilot.pause()


def test_label_screen(snap_compare, app):
    async def run_before(pilot):
        await model_ready(pilot)
        await steady_cursors(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_write_screen(snap_compare, app):
    async def run_before(pilot):
        await model_ready(pilot)
        await pilot.press("f2")
        await type_text(pilot, "What is the capital of France?")
        await pilot.press("tab")
        await type_text(pilot, "Paris.")
        await pilot.press("tab")
        await type_text(pilot, "France has many cities; one of them is probably the capital.")
        await steady_cursors(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_data_screen(snap_compare, app):
    with PreferenceStore(Path("workspace")) as store:
        store.add_pair("What is 2+2?", "4.", "Numbers are hard to say.", label=False)
        store.add_pair(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
            "Blue.",
            "There are very many colours, and choosing one is difficult.",
            label=False,
        )
        pair = store.add_pair(
            "Say hello in French.",
            "Bonjour !",
            "Hello.",
            origin="sampled",
            sampler="SmolLM2-135M-Instruct",
            label=False,
            judge="score:judges.py:french",
            version="v1",
            shown_first="rejected",
        )
        store.update_pair(pair.id, split="valid")

    async def run_before(pilot):
        await model_ready(pilot)
        await pilot.press("f3")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_edit_answers_modal(snap_compare, app):
    async def run_before(pilot):
        await model_ready(pilot)
        pilot.app.push_screen(
            EditAnswersModal("The capital of France is Paris.", "France's capital? Probably Lyon, or Paris.")
        )
        await pilot.pause()
        await steady_cursors(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_export_screen(snap_compare, app):
    async def run_before(pilot):
        await model_ready(pilot)
        await pilot.press("f6")
        await pilot.pause()
        screen = pilot.app.screen
        screen.query_one("#export-adapter").value = "workspace/adapters/run1"  # relative: the same in every run
        screen.query_one("#push-repo").value = "someone/tiny-dpo"
        await pilot.pause()
        await steady_cursors(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_train_screen_with_versions_and_plots(snap_compare, app):
    with PreferenceStore(Path("workspace")) as store:
        ids = [store.add_pair(f"question {i}", f"a good answer {i}", f"bad {i}", label=False).id for i in range(6)]
        metrics = {
            "loss": 0.61,
            "rewards/accuracies": 0.75,
            "rewards/margins": 0.21,
            "new_pairs": 4,
            "ref_cache/misses": 8,
            "ref_cache/hits": 0,
        }
        heldout = {
            "heldout/accuracy": 0.5,
            "heldout/kl": 0.042,
            "heldout/score": 0.61,
            "heldout/win_vs_previous": 0.55,
            "heldout/win_vs_base": 0.55,
            "heldout_base/accuracy": 0.25,
            "heldout_base/kl": 0.0,
            "heldout_base/score": 0.48,
        }
        store.record_round(1, "workspace/adapters/v1", {}, {**metrics, **heldout}, "finished", ids[:4])
        store.record_round(2, "workspace/adapters/v2", {}, {**metrics, "new_pairs": 2}, "cancelled", ids)

    async def run_before(pilot):
        await model_ready(pilot)
        await pilot.press("f4")
        screen = pilot.app.screen
        # A round's step reports, as the training child sends them (the last step: an ETA of 0 s).
        for step in range(1, 9):
            screen.post_message(
                WorkerEvent(
                    StepMetrics(
                        step,
                        8,
                        {
                            "loss": 0.69 - 0.02 * step,
                            "rewards/margins": 0.03 * step,
                            "rewards/accuracies": min(1, 0.1 * step),
                            "tokens_per_second": 1000,
                            "peak_memory_gb": 0.5,
                        },
                    )
                )
            )
        await pilot.pause()
        await steady_cursors(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compare_screen_with_answers(snap_compare, app):
    async def run_before(pilot):
        await model_ready(pilot)
        await pilot.press("f5")
        await type_text(pilot, "Name a colour.")
        await pilot.press("ctrl+s")
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.state == "ready", timeout=60, what="both answers")
        await pilot.press("escape")
        await steady_cursors(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_confirm_modal(snap_compare, app):
    async def run_before(pilot):
        await model_ready(pilot)
        await steady_cursors(pilot)  # the Label screen's, behind the modal
        pilot.app.push_screen(ConfirmModal("Delete pair #3? This cannot be undone."))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_export_screen_showing_an_error(snap_compare, app):
    async def run_before(pilot):
        await model_ready(pilot)
        await pilot.press("f6")
        await pilot.pause()
        screen = pilot.app.screen
        screen.query_one("#export-adapter").value = "workspace/adapters/missing"
        screen.query_one("#export-out").value = "workspace/exports/out"
        await pilot.press("ctrl+e")
        await wait_until(pilot, lambda: screen.busy is None, timeout=60, what="the refused export")
        pilot.app.clear_notifications()  # the toast's own timer would make the shot depend on time
        await pilot.pause()
        await steady_cursors(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
