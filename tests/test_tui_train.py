"""The Train (F4) and Compare (F5) screens: incremental rounds from the app, in a child process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from helpers import make_tiny_model_folder, sample_answers, type_text, wait_until
from mlx_dpo.store import PreferenceStore
from tui.app import MlxDpoApp
from tui.backend import SampleSettings

pytestmark = pytest.mark.anyio

SIZE = (140, 44)
FAST = SampleSettings(max_tokens=12, temperature=1.0)
TINY_ROUND = {"train-iters": "2", "train-batch": "2", "train-rank": "4", "train-layers": "2", "train-lr": "1e-4"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, default_model_path) -> Path:
    return make_tiny_model_folder(tmp_path_factory.mktemp("models") / "tiny-train", default_model_path, seed=31)


def add_pairs(workspace: Path, count: int, start: int = 0) -> list[int]:
    with PreferenceStore(workspace) as store:
        return [store.add_pair([{"role": "user", "content": f"question {i}"}], f"a good answer number {i}",
                               f"bad {i}", label=False).id for i in range(start, start + count)]


async def set_round_settings(pilot, values: dict) -> None:
    screen = pilot.app.get_screen("train")
    for input_id, value in values.items():
        screen.query_one(f"#{input_id}", Input).value = value
    await pilot.pause()


async def train_round(pilot, *, timeout: float = 240) -> dict:
    screen = pilot.app.get_screen("train")
    await pilot.press("ctrl+t")
    assert screen.state == "training"
    await wait_until(pilot, lambda: screen.last_round is not None, timeout=timeout, what="the round to end")
    assert screen.last_round["type"] == "RoundEnded", screen.last_round
    return screen.last_round


async def model_ready(pilot, timeout: float = 120) -> None:
    await wait_until(pilot, lambda: pilot.app.model_state == "ready", timeout=timeout, what="the model")


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
async def test_label_train_sample_repeat_on_default_model(tmp_path):
    """The whole loop on the default model: label 4, train v1, sample from v1, label 2, train v2, back to v1."""
    workspace = tmp_path / "ws"
    app = MlxDpoApp(workspace, settings=FAST)
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
        assert r1["status"] == "finished" and r1["version"] == 1
        assert r1["metrics"]["ref_cache/misses"] == 8
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
        assert r2["status"] == "finished" and r2["version"] == 2
        rounds = app.store.list_rounds()
        assert rounds[1]["settings"]["init_adapter"] == v1
        m = rounds[1]["metrics"]
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


async def test_cancel_mid_round_keeps_checkpoint_and_app_usable(tmp_path, tiny_model):
    workspace = tmp_path / "ws"
    add_pairs(workspace, 4)
    app = MlxDpoApp(workspace, model=str(tiny_model), settings=FAST)
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("f4")
        screen = app.get_screen("train")
        await set_round_settings(pilot, TINY_ROUND)
        r1 = await train_round(pilot)
        assert r1["status"] == "finished"
        await model_ready(pilot)

        add_pairs(workspace, 2, start=10)
        await set_round_settings(pilot, {"train-iters": "200"})
        await pilot.press("escape", "ctrl+t")
        await wait_until(pilot, lambda: any(e["type"] == "StepMetrics" and e["step"] >= 2 for e in screen.events),
                         timeout=120, what="two steps")
        await pilot.press("c")
        assert screen.state in ("cancelling", "idle")  # a tiny model may already have stopped
        await wait_until(pilot, lambda: screen.last_round is not None, timeout=60, what="the cancelled round")
        assert screen.last_round["status"] == "cancelled" and screen.state == "idle"
        v2 = workspace / "adapters" / "v2"
        steps = [e["step"] for e in screen.events if e["type"] == "StepMetrics"]
        ckpts = sorted(p.name for p in (v2 / "checkpoints").iterdir())
        assert ckpts[-1] == f"step-{max(steps):06d}" and max(steps) < 200  # stopped within a step, kept the last
        assert app.worker.adapter_path == str(workspace / "adapters" / "v1")  # still sampling from v1

        # The app is still usable: sample on the Label screen, then the next round starts cleanly from v1.
        await pilot.press("f1")
        await sample_answers(pilot, "Still there?")
        await pilot.press("f4")
        await set_round_settings(pilot, {"train-iters": "2"})
        r3 = await train_round(pilot)
        assert r3["status"] == "finished" and r3["version"] == 3
        rounds = app.store.list_rounds()
        assert [r["status"] for r in rounds] == ["finished", "cancelled", "finished"]
        assert rounds[2]["settings"]["init_adapter"] == str(workspace / "adapters" / "v1")


async def test_keys_answered_quickly_while_training(tmp_path, tiny_model):
    workspace = tmp_path / "ws"
    add_pairs(workspace, 4)
    app = MlxDpoApp(workspace, model=str(tiny_model), settings=FAST)
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("f4")
        screen = app.get_screen("train")
        await set_round_settings(pilot, {**TINY_ROUND, "train-iters": "100"})
        await pilot.press("escape", "ctrl+t")
        await wait_until(pilot, lambda: any(e["type"] == "StepMetrics" for e in screen.events), timeout=120,
                         what="the first step")
        assert screen.process.process.is_alive()
        beta = screen.query_one("#train-beta", Input)
        beta.focus()
        await pilot.pause()
        latencies = []
        def shown():
            return beta.value, beta.cursor_position, app.focused

        async def changed_at(before) -> float:
            """When the screen state first differs from `before` (polled every 2 ms on the event loop)."""
            while shown() == before:
                await asyncio.sleep(0.002)
            return time.perf_counter()

        # From pilot.press to the UI reflecting the key (pilot.press itself returns only later, once the
        # whole app is idle, so its own duration is not the latency a user sees).
        for key in ("home", "end", "backspace", "backspace", "backspace", "1", "tab", "shift+tab"):
            before = shown()
            watcher = asyncio.ensure_future(changed_at(before))
            start = time.perf_counter()
            await pilot.press(key)
            reflected = await asyncio.wait_for(watcher, timeout=1)
            latencies.append(reflected - start)
        assert screen.state == "training" and screen.process.process.is_alive()  # measured while training
        print(f"key latencies while training (s): {[round(t, 3) for t in latencies]}")
        assert max(latencies) < 0.1, latencies
        await pilot.press("escape", "c")
        await wait_until(pilot, lambda: screen.last_round is not None, timeout=60, what="the cancelled round")


async def test_compare_two_versions_saves_a_compared_pair(tmp_path, tiny_model):
    workspace = tmp_path / "ws"
    add_pairs(workspace, 4)
    app = MlxDpoApp(workspace, model=str(tiny_model), settings=SampleSettings(max_tokens=12, seed=5))
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("f4")
        await set_round_settings(pilot, {**TINY_ROUND, "train-lr": "5e-2"})
        await train_round(pilot)
        await model_ready(pilot)
        await pilot.press("f5")
        screen = app.get_screen("compare")
        assert [v[0] for v in screen.pair()] == ["base", "v1"]
        await type_text(pilot, "Name a colour.")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.state == "ready", timeout=60, what="both answers")
        await pilot.press("escape", "2")
        assert screen.state == "saved"
        pair = app.store.list_pairs()[0]
        assert pair.origin == "compared" and "base vs v1" in pair.sampler
        # b cycles answer 2 to the base: same model, same seed, same answer.
        await pilot.press("b")
        assert [v[0] for v in screen.pair()] == ["base", "base"]
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.state == "ready", timeout=60, what="both answers")
        answers = [screen.query_one(f"#compare-{s}").text for s in (1, 2)]
        assert answers[0] == answers[1]
