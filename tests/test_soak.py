"""Many hands on one workspace at once: the app (under Pilot) labels pairs while `mlx-dpo online` runs rounds
with a program judge and `mlx-dpo data import` adds pairs, all on the same store and adapters folder.

All three start on a workspace that does not exist yet. Afterwards every pair, every judgment and every version is
there exactly once, and no process failed. Bounded: ROUNDS online rounds, IMPORTS imports, and the app labels until
both are done (at least MIN_LABELS, at most MAX_LABELS).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from helpers import console_script, errors, model_ready, run_console, sample_answers, wait_until, write_jsonl

from mlx_dpo.data.store import PreferenceStore
from tui.app import MlxDpoApp
from tui.workers import SampleSettings

pytestmark = pytest.mark.anyio

ROUNDS, PER_ROUND = 4, 4
IMPORTS, PER_IMPORT = 8, 5
MIN_LABELS, MAX_LABELS = 6, 60
PREFER_JUDGE = """
def first_in_order(prompt, answer_1, answer_2):
    return 1 if answer_1 <= answer_2 else 2
"""


def start_online(workspace, tmp_path, model) -> subprocess.Popen:
    prompts = tmp_path / "online-prompts.txt"
    prompts.write_text("".join(f"Online prompt {i}.\n" for i in range(ROUNDS * PER_ROUND)))
    judge = tmp_path / "judge.py"
    judge.write_text(PREFER_JUDGE)
    return subprocess.Popen(
        [
            console_script(),
            "online",
            "--workspace",
            str(workspace),
            "--prompts",
            str(prompts),
            "--judge",
            f"{judge}:first_in_order",
            "--model",
            str(model),
            "--rounds",
            str(ROUNDS),
            "--per-round",
            str(PER_ROUND),
            "--temperature",
            "2",
            "--max-tokens",
            "6",
            "--iters",
            "2",
            "--batch-size",
            "2",
            "--no-compile",
            "--heldout-samples",
            "0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_imports(workspace, tmp_path, results: list) -> None:
    """IMPORTS `mlx-dpo data import` runs one after another (a thread's work, beside the app and online)."""
    for f in range(IMPORTS):
        rows = [{"prompt": f"Imported {f}-{i}?", "chosen": "Yes.", "rejected": "No."} for i in range(PER_IMPORT)]
        results.append(
            run_console(
                "data", "import", str(write_jsonl(tmp_path / f"import-{f}.jsonl", *rows)), "--workspace", str(workspace)
            )
        )


async def label_one(pilot, n: int) -> int:
    """Sample two answers to "App prompt n", pick the first, wait until it is saved; its pair id."""
    screen = pilot.app.get_screen("label")
    first, second = await sample_answers(pilot, f"App prompt {n}.")
    while first == second:  # a pair needs two different answers
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.state == "ready", timeout=120, what="both answers")
        first, second = screen.answers()
    await pilot.press("1")
    await wait_until(pilot, lambda: screen.status_text.startswith("saved pair #"), timeout=120, what="saved")
    pair_id = int(screen.status_text.split("#")[1].split()[0])
    await pilot.press("n")
    return pair_id


async def test_the_app_online_rounds_and_imports_on_one_workspace_keep_every_label_once(small_model, tmp_path):
    workspace = tmp_path / "ws"
    app = MlxDpoApp(workspace, model=str(small_model), settings=SampleSettings(temperature=2.0, max_tokens=8))
    labeled: dict[int, int] = {}  # label number -> pair id
    imports: list[subprocess.CompletedProcess] = []
    # All three start on a workspace that does not exist yet (a person opening the app as `online` starts).
    started = time.monotonic()
    online = start_online(workspace, tmp_path, small_model)
    importer = threading.Thread(target=run_imports, args=(workspace, tmp_path, imports))
    importer.start()
    async with app.run_test(size=(120, 36)) as pilot:
        await model_ready(pilot)
        while len(labeled) < MAX_LABELS and (len(labeled) < MIN_LABELS or online.poll() is None or importer.is_alive()):
            labeled[len(labeled) + 1] = await label_one(pilot, len(labeled) + 1)
        seconds = time.monotonic() - started
        assert errors(app) == []
    importer.join()
    out, err = online.communicate(timeout=600)
    assert online.returncode == 0 and "Traceback" not in err, err
    assert all(r.returncode == 0 and f"imported {PER_IMPORT} pair(s)" in r.stdout for r in imports), imports
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["round"] for r in reports] == list(range(1, ROUNDS + 1))

    with PreferenceStore(workspace) as store:
        pairs, skips, rounds = store.list_pairs(), store.list_skips(), store.list_rounds()
        judged = store.online_prompts(str((tmp_path / "online-prompts.txt").resolve()))
        assert store.integrity_check() == "ok"
    prompts = [p.prompt[-1]["content"] for p in pairs]
    assert len({(json.dumps(p.prompt), p.chosen, p.rejected) for p in pairs}) == len(pairs)  # no pair twice
    # The app's labels: each one saved once, under the id the app reported.
    app_pairs = {p.prompt[-1]["content"]: p.id for p in pairs if p.prompt[-1]["content"].startswith("App prompt")}
    assert app_pairs == {f"App prompt {n}.": pair_id for n, pair_id in labeled.items()}
    # The imports: every row once.
    assert sorted(p for p in prompts if p.startswith("Imported")) == sorted(
        f"Imported {f}-{i}?" for f in range(IMPORTS) for i in range(PER_IMPORT)
    )
    # Online: every prompt of the file judged once, its pair or tie stored once, by the judge.
    assert sorted(u.position for u in judged) == list(range(ROUNDS * PER_ROUND))
    online_pairs = {p.id for p in pairs if p.judge}
    assert online_pairs == {u.pair_id for u in judged if u.pair_id is not None}
    assert {s.id for s in skips} == {u.skip_id for u in judged if u.skip_id is not None}
    assert sum(r["pairs"] for r in reports) == len(online_pairs)
    assert len(pairs) == len(labeled) + IMPORTS * PER_IMPORT + len(online_pairs)
    # Versions: one per round, each with its folder and nothing else in the adapters folder.
    assert [(r.version, r.status) for r in rounds] == [(v, "finished") for v in range(1, ROUNDS + 1)]
    folders = sorted(p.name for p in (workspace / "adapters").iterdir() if p.name.startswith("v"))
    assert folders == [f"v{v}" for v in range(1, ROUNDS + 1)]
    print(
        f"soak: {seconds:.0f} s, {len(labeled)} labels in the app, {IMPORTS} imports of {PER_IMPORT} pairs, "
        f"{ROUNDS} online rounds ({len(online_pairs)} pairs, {len(skips)} ties/skips), {len(pairs)} pairs, "
        f"{len(rounds)} versions"
    )
