"""Child process for test_tui.py's SIGKILL test: the real app, headless under Pilot, labeling pairs with keys.

    python tests/tui_labeler.py WORKSPACE MODEL

Prints "first-screen-ms N" once, then "ack N PAIR_ID" after each label's "saved" status has appeared
(which the app only shows once the store's add_pair has returned), and keeps labeling until killed.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import asyncio  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx_dpo.blas  # noqa: E402,F401  # an optimized BLAS, before mlx.core is imported (blas.py)

from helpers import sample_answers, wait_until  # noqa: E402

from tui.app import MlxDpoApp  # noqa: E402
from tui.workers import SampleSettings  # noqa: E402


async def main(workspace: str, model: str) -> None:
    app = MlxDpoApp(workspace, model=model, settings=SampleSettings(max_tokens=8))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: app.first_screen_at is not None)
        print(f"first-screen-ms {(app.first_screen_at - STARTED) * 1000:.0f}", flush=True)
        screen = app.get_screen("label")
        n = 0
        while True:
            n += 1
            await sample_answers(pilot, f"prompt number {n}")
            await pilot.press("1")
            await wait_until(pilot, lambda: screen.status_text.startswith("saved pair #"), what="saved")
            pair_id = int(screen.status_text.split("#")[1].split()[0])
            print(f"ack {n} {pair_id}", flush=True)
            await pilot.press("n")  # a new, empty prompt; the editor has the focus again


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
