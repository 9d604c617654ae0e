"""How quickly the terminal app answers: the first screen, a keystroke while the model loads, keys while a round trains.

The tests check the structure behind these figures (the first screen is drawn while the model worker is held;
keys are handled while the training child is stopped); this script measures the times, on the real default
model (or --model), headless under Textual's Pilot, in a throwaway workspace. Prints JSON:
  first_screen_ms          MlxDpoApp() to the first screen drawn
  key_while_loading_ms     a key event to its character in the prompt editor, while the model loads
                           (null when the model was ready first)
  model_ready_s            MlxDpoApp() to "model ready"
  keys_while_training_ms   for each of a few keys on the Train screen, the key press to the screen showing it,
                           while a round trains in the child process (the old test's bound was 100 ms)

    .venv/bin/python benchmarks/tui_latency.py [--no-training] [--iters 60] [--model M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

# A fresh home (removed at exit): the default model is converted as on a first run, as a new user sees it.
# Set before the imports: huggingface_hub reads HF_HUB_OFFLINE once (nothing here needs the network).
_HOME = tempfile.TemporaryDirectory(prefix="mlx-dpo-bench-home-")
os.environ.setdefault("MLX_DPO_HOME", _HOME.name)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mlx_dpo.blas  # noqa: E402,F401  # an optimized BLAS, before mlx.core is imported (blas.py)

from textual import events  # noqa: E402

from mlx_dpo.data.store import PreferenceStore  # noqa: E402
from mlx_dpo.events import StepMetrics  # noqa: E402
from tui.app import MlxDpoApp  # noqa: E402
from tui.workers import SampleSettings  # noqa: E402

SIZE = (140, 44)
TRAIN_KEYS = ("home", "end", "backspace", "backspace", "backspace", "1", "tab", "shift+tab")


async def wait_until(pilot, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        await pilot.pause(0.02)


async def until_changed(read, before) -> float:
    """perf_counter() when `read()` first differs from `before` (polled every 2 ms on the event loop)."""
    while read() == before:
        await asyncio.sleep(0.002)
    return time.perf_counter()


async def loading_figures(pilot, app: MlxDpoApp, created: float) -> dict:
    await wait_until(pilot, lambda: app.first_screen_at is not None, 60, "the first screen")
    figures = {"first_screen_ms": round((app.first_screen_at - created) * 1000, 1), "key_while_loading_ms": None}
    prompt = app.get_screen("label").query_one("#prompt")
    if app.model_state == "loading":
        start = time.perf_counter()
        app.post_message(events.Key("H", "H"))
        shown = await asyncio.wait_for(until_changed(lambda: prompt.text, prompt.text), timeout=60)
        if app.model_state == "loading":  # else the key waited for the load, which says nothing about it
            figures["key_while_loading_ms"] = round((shown - start) * 1000, 1)
    await wait_until(pilot, lambda: app.model_state == "ready", 300, "the model")
    figures["model_ready_s"] = round(time.perf_counter() - created, 2)
    return figures


async def training_figures(pilot, app: MlxDpoApp, iters: int) -> list[float]:
    await pilot.press("f4")
    screen = app.get_screen("train")
    settings = {"train-iters": str(iters), "train-batch": "2", "train-rank": "4", "train-layers": "2"}
    for input_id, value in settings.items():
        screen.query_one(f"#{input_id}").value = value
    await pilot.press("escape", "ctrl+t")
    await wait_until(pilot, lambda: any(isinstance(e, StepMetrics) for e in screen.events), 300, "the first step")
    beta = screen.query_one("#train-beta")
    beta.focus()
    await pilot.pause()

    def shown():
        return beta.value, beta.cursor_position, app.focused

    latencies = []
    for key in TRAIN_KEYS:
        watcher = asyncio.ensure_future(until_changed(shown, shown()))
        start = time.perf_counter()
        await pilot.press(key)
        latencies.append(round((await asyncio.wait_for(watcher, timeout=30) - start) * 1000, 1))
    if screen.state != "training":
        raise SystemExit(f"the round ended before the keys were measured: raise --iters (now {iters})")
    await pilot.press("escape", "c")
    await wait_until(pilot, lambda: screen.last_round is not None, 120, "the cancelled round")
    return latencies


async def measure(workspace: Path, model: str | None, training: bool, iters: int) -> dict:
    with PreferenceStore(workspace) as store:
        for i in range(4):
            store.add_pair(
                [{"role": "user", "content": f"question {i}"}], f"a good answer number {i}", f"bad {i}", label=False
            )
    created = time.perf_counter()
    app = MlxDpoApp(workspace, model=model, settings=SampleSettings(max_tokens=8))
    async with app.run_test(size=SIZE) as pilot:
        figures = await loading_figures(pilot, app, created)
        if training:
            figures["keys_while_training_ms"] = await training_figures(pilot, app, iters)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-training", action="store_true", help="skip the keys-while-training figures")
    parser.add_argument("--iters", type=int, default=60, help="steps of the round the keys are measured in")
    parser.add_argument("--model", help="a --model value, as for `mlx-dpo tui` (default: the default model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlx-dpo-bench-") as tmp:
        figures = asyncio.run(measure(Path(tmp) / "workspace", args.model, not args.no_training, args.iters))
    keys = figures.get("keys_while_training_ms")
    if keys:
        figures["keys_while_training_max_ms"] = max(keys)
    figures["model"] = args.model or "default"
    figures["machine"] = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
