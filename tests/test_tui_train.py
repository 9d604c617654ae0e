"""The Train (F4) and Compare (F5) screens: incremental rounds from the app, in a child process."""

from __future__ import annotations

import os
import signal
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from helpers import errors, model_ready, sample_answers, type_text, wait_until, warnings
from textual.widgets import DataTable, Input

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.events import RoundEnded, RoundFailed, StepMetrics
from mlx_dpo.models.generate import answer, chat_messages
from mlx_dpo.models.load import load_model
from tui.app import MlxDpoApp
from tui.workers import SampleSettings

pytestmark = pytest.mark.anyio

SIZE = (140, 44)
FAST = SampleSettings(max_tokens=12, temperature=1.0)
TINY_ROUND = {"train-iters": "2", "train-batch": "2", "train-rank": "4", "train-layers": "2", "train-lr": "1e-4"}
TINY_SEED = 31  # this module's `tiny` model (conftest.py)


def add_pairs(workspace: Path, count: int, start: int = 0) -> list[int]:
    with PreferenceStore(workspace) as store:
        return [
            store.add_pair(
                [{"role": "user", "content": f"question {i}"}], f"a good answer number {i}", f"bad {i}", label=False
            ).id
            for i in range(start, start + count)
        ]


async def set_round_settings(pilot, values: dict) -> None:
    screen = pilot.app.get_screen("train")
    for input_id, value in values.items():
        screen.query_one(f"#{input_id}", Input).value = value
    await pilot.pause()


async def train_round(pilot, *, timeout: float = 240) -> RoundEnded:
    screen = pilot.app.get_screen("train")
    await pilot.press("ctrl+t")
    assert screen.state == "training"
    await wait_until(pilot, lambda: screen.last_round is not None, timeout=timeout, what="the round to end")
    assert isinstance(screen.last_round, RoundEnded), screen.last_round
    return screen.last_round


@asynccontextmanager
async def on_train_screen(workspace: Path, model: Path, settings: SampleSettings = FAST):
    """The app on 4 untrained pairs and the tiny model, loaded, showing the Train screen: (pilot, screen)."""
    add_pairs(workspace, 4)
    app = MlxDpoApp(workspace, model=str(model), settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("f4")
        yield pilot, app.get_screen("train")


async def label_one(pilot, prompt: str) -> None:
    """On the Label screen: sample two answers to `prompt` and pick answer 1 (resampling identical ones)."""
    screen = pilot.app.get_screen("label")
    await pilot.press("n")  # a new, empty prompt, focused
    first, second = await sample_answers(pilot, prompt, timeout=120)
    while first.strip() == second.strip():
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.state == "ready", timeout=120, what="resampled answers")
        first, second = screen.answers()
    await pilot.press("1")
    assert screen.labeled and screen.labeled.startswith("pair")


@pytest.mark.slow
async def test_label_train_sample_repeat(tmp_path, tiny):
    """The whole loop: label 4, train v1, sample from v1, label 2, train v2, back to v1.

    On the tiny model: the same app, worker and training child as on the default one, whose rounds
    `test_training.py` and the demo test train (this loop on it cost ~2 minutes of the suite's CPU).
    """
    workspace = tmp_path / "ws"
    app = MlxDpoApp(workspace, model=str(tiny), settings=FAST)
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("escape")
        for i in range(4):
            await label_one(pilot, f"Name a fruit, please ({i}).")
        assert len(app.store.untrained_pairs()) == 4

        await pilot.press("f4")
        train = app.get_screen("train")
        assert "4 untrained pairs" in str(train.query_one("#train-summary").render())
        await set_round_settings(pilot, TINY_ROUND)
        r1 = await train_round(pilot)
        assert r1.status == "finished" and r1.version == 1
        assert r1.metrics["ref_cache/misses"] == 8
        assert len(train.history["loss"]) == 2  # one point per step on the live plots
        v1 = str(workspace / "adapters" / "v1")
        await model_ready(pilot)
        assert app.worker.adapter_path == v1 and app.current_version_label() == "v1"
        assert "v1" in app.model_status[3]

        # Sampling now uses v1: the next labeled pair records it as its sampler.
        await pilot.press("f1")
        await label_one(pilot, "Name a colour.")
        await label_one(pilot, "Name an animal.")
        newest = app.store.list_pairs()[0]
        assert newest.sampler.endswith("+" + v1)

        await pilot.press("f4")
        r2 = await train_round(pilot)
        assert r2.status == "finished" and r2.version == 2
        rounds = app.store.list_rounds()
        assert rounds[1].settings["init_adapter"] == v1
        m = rounds[1].metrics
        assert m["new_pairs"] == 2 and m["replayed_pairs"] == 1
        assert m["ref_cache/misses"] == 4  # the reference pass ran for the 2 new pairs only
        assert m["ref_cache/hits"] == 2 * m["replayed_pairs"]  # the replayed old pair came from the cache
        await model_ready(pilot)
        assert app.worker.adapter_path == str(workspace / "adapters" / "v2")

        # Back to v1: select its row, press v.
        table = train.query_one("#versions", DataTable)
        table.focus()
        table.move_cursor(row=1)
        await pilot.press("v")
        await model_ready(pilot)
        assert app.worker.adapter_path == v1 and app.current_version_label() == "v1"
        assert "+ v1" in app.model_status[3]


async def test_cancel_mid_round_keeps_checkpoint_and_app_usable(tmp_path, tiny):
    workspace = tmp_path / "ws"
    async with on_train_screen(workspace, tiny) as (pilot, screen):
        app = pilot.app
        await set_round_settings(pilot, TINY_ROUND)
        r1 = await train_round(pilot)
        assert r1.status == "finished"
        await model_ready(pilot)

        add_pairs(workspace, 2, start=10)
        await set_round_settings(pilot, {"train-iters": "200"})
        await pilot.press("escape", "ctrl+t")
        await wait_until(
            pilot,
            lambda: any(isinstance(e, StepMetrics) and e.step >= 2 for e in screen.events),
            timeout=120,
            what="two steps",
        )
        await pilot.press("c")
        assert screen.state in ("cancelling", "idle")  # a tiny model may already have stopped
        await wait_until(pilot, lambda: screen.last_round is not None, timeout=60, what="the cancelled round")
        assert screen.last_round.status == "cancelled" and screen.state == "idle"
        v2 = workspace / "adapters" / "v2"
        steps = [e.step for e in screen.events if isinstance(e, StepMetrics)]
        ckpts = sorted(p.name for p in (v2 / "checkpoints").iterdir())
        assert ckpts[-1] == f"step-{max(steps):06d}" and max(steps) < 200  # stopped within a step, kept the last
        assert app.worker.adapter_path == str(workspace / "adapters" / "v1")  # still sampling from v1

        # The app is still usable: sample on the Label screen, then the next round starts cleanly from v1.
        await pilot.press("f1")
        await sample_answers(pilot, "Still there?")
        await pilot.press("f4")
        await set_round_settings(pilot, {"train-iters": "2"})
        r3 = await train_round(pilot)
        assert r3.status == "finished" and r3.version == 3
        rounds = app.store.list_rounds()
        assert [r.status for r in rounds] == ["finished", "cancelled", "finished"]
        assert rounds[2].settings["init_adapter"] == str(workspace / "adapters" / "v1")


async def test_keys_are_handled_while_the_training_child_is_stopped(tmp_path, tiny):
    """The app never waits on the training child: with the child frozen (SIGSTOP) in the middle of a round,
    every key press still changes the screen; then the child goes on and the round is cancelled.
    (How quickly keys are answered while a round trains is measured by benchmarks/tui_latency.py.)"""
    async with on_train_screen(tmp_path / "ws", tiny) as (pilot, screen):
        app = pilot.app
        await set_round_settings(pilot, {**TINY_ROUND, "train-iters": "100", "train-beta": "0.1"})
        await pilot.press("escape", "ctrl+t")
        await wait_until(
            pilot, lambda: any(isinstance(e, StepMetrics) for e in screen.events), timeout=120, what="the first step"
        )
        child = screen.process.process
        os.kill(child.pid, signal.SIGSTOP)
        try:
            _, status = os.waitpid(child.pid, os.WUNTRACED)  # returns once the child is stopped
            assert os.WIFSTOPPED(status)
            beta, lr = screen.query_one("#train-beta", Input), screen.query_one("#train-lr", Input)
            beta.focus()
            await pilot.pause()
            await pilot.press("end", "backspace", "backspace", "backspace", "1")
            assert beta.value == "1" and beta.cursor_position == 1
            await pilot.press("home")
            assert beta.cursor_position == 0
            await pilot.press("tab")
            assert app.focused is lr
            await pilot.press("shift+tab")
            assert app.focused is beta
            await pilot.press("f1")
            assert app.screen is app.get_screen("label")
            await pilot.press("f4")
            assert app.screen is screen
            assert screen.state == "training" and child.is_alive()  # all of it while the child was stopped
        finally:
            os.kill(child.pid, signal.SIGCONT)
        await pilot.press("escape", "c")
        await wait_until(pilot, lambda: screen.last_round is not None, timeout=60, what="the cancelled round")
        assert screen.last_round.status == "cancelled"


async def test_compare_two_versions_saves_a_compared_pair(tmp_path, tiny):
    sampling = SampleSettings(max_tokens=12, seed=5)
    async with on_train_screen(tmp_path / "ws", tiny, sampling) as (pilot, _):
        app = pilot.app
        await set_round_settings(pilot, {**TINY_ROUND, "train-lr": "5e-2"})
        await train_round(pilot)
        await model_ready(pilot)
        await pilot.press("f5")
        screen = app.get_screen("compare")
        assert [v[0] for v in screen.pair()] == ["base", "v1"]
        await type_text(pilot, "Name a colour.")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.state == "ready", timeout=60, what="both answers")
        # Each answer is what its version says to the prompt with the screen's seed, sampled here afresh.
        v1_path = app.store.list_rounds()[0].adapter_path
        expected = [
            answer(
                load_model(str(tiny), adapter_path=adapter),
                chat_messages("Name a colour."),
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                seed=sampling.seed,
            )
            for adapter in (None, v1_path)
        ]
        assert list(screen.answers()) == expected
        assert expected[0] != expected[1]  # training moved v1: the check above tells the versions apart
        await pilot.press("escape", "2")
        assert screen.state == "saved"
        pair = app.store.list_pairs()[0]
        assert pair.origin == "compared" and "base vs v1" in pair.sampler
        assert (pair.chosen, pair.rejected) == (expected[1], expected[0])  # 2 picked v1's answer
        # b cycles answer 2 to the base: same model, same seed, same answer.
        await pilot.press("b")
        assert [v[0] for v in screen.pair()] == ["base", "base"]
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.state == "ready", timeout=60, what="both answers")
        answers = [screen.query_one(f"#compare-{s}").text for s in (1, 2)]
        assert answers[0] == answers[1]
        # Train's "use base": the app samples from the base again (v1 became current when its round ended).
        assert app.current_version_label() == "v1" and app.worker.adapter_path == v1_path
        await pilot.press("f4")
        await pilot.click("#train-base")  # (a key would go to the focused settings field)
        await model_ready(pilot)
        assert app.current_version_label() == "base" and app.worker.adapter_path is None


async def test_the_train_fields_take_a_fractional_pass_count_and_name_a_bad_value_by_its_label(tmp_path, tiny):
    """The fields parse and check with the settings' own parsers and rules (mlx_dpo.settings): passes is a float."""
    app = MlxDpoApp(tmp_path / "ws", model=str(tiny), settings=FAST)
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("f4")
        screen = app.get_screen("train")
        await set_round_settings(pilot, {"train-iters": "", "train-passes": "0.5"})
        assert screen.settings() == {
            "loss_type": "sigmoid",
            "beta": 0.1,
            "learning_rate": 1e-4,
            "passes": 0.5,
            "batch_size": 4,
            "lora_rank": 8,
            "replay": 0.5,
            "method": "dpo",
        }
        await set_round_settings(pilot, {"train-beta": "0"})
        with pytest.raises(ValueError, match=r"^β must be > 0 \(got 0\)$"):
            screen.settings()
        await set_round_settings(pilot, {"train-beta": "0.1", "train-passes": "half"})
        with pytest.raises(ValueError, match=r"^passes \(if no steps\): not a number \('half'\)$"):
            screen.settings()


async def test_train_refuses_no_pairs_bad_settings_and_a_second_round_and_reports_a_failing_one(tmp_path, tiny):
    workspace = tmp_path / "ws"
    app = MlxDpoApp(workspace, model=str(tiny), settings=FAST)
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("f4")
        screen = app.get_screen("train")
        await pilot.press("ctrl+t")  # an empty store
        assert (screen.state, screen.process) == ("idle", None)
        assert warnings(app)[-1] == "Nothing to train: No untrained pairs: label some first."

        add_pairs(workspace, 4)
        await set_round_settings(pilot, {"train-beta": "0"})
        await pilot.press("ctrl+t")
        assert (screen.state, screen.process) == ("idle", None)
        assert errors(app)[-1] == "Not started: β must be > 0 (got 0)"

        # More LoRA layers than the tiny model has: the settings pass their checks, the child fails.
        await set_round_settings(pilot, {**TINY_ROUND, "train-beta": "0.1", "train-layers": "5"})
        await pilot.press("ctrl+t")
        assert screen.state == "training"
        child = screen.process
        await pilot.press("ctrl+t")
        assert warnings(app)[-1] == "A round is already running."
        assert screen.process is child  # no second child
        await wait_until(pilot, lambda: screen.last_round is not None, timeout=240, what="the failing round")
        assert isinstance(screen.last_round, RoundFailed)
        assert screen.last_round.error and errors(app)[-1] == f"Training failed: {screen.last_round.error}"
        assert screen.state == "idle"
        assert not [r for r in app.store.list_rounds() if r.status == "finished"]
        assert len(app.store.untrained_pairs()) == 4  # the pairs are still to train
