"""`mlx-dpo online` killed (SIGKILL) at each stage of a round, then run again with the same command: the store
and the version folders agree, no judged prompt is lost or judged twice, and the run ends with as many rounds as
it was asked for.

Each kill lands at a named pause point (mlx_dpo/training/pause.py), so it lands at the same place on any
machine: while round 1's answers are sampled, after its first prompt is judged and stored, after the first batch
of its reference pass is cached (each test has a reference cache of its own, so that pass has work to do), after
its first training step (checkpointed), and when it has finished and is recorded but not yet measured on
held-out prompts. A round killed while it trains is recorded as failed by the next one (training/versions.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import held_child, run_console

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.training.versions import INTERRUPTED, record_interrupted

ROUNDS, PER_ROUND = 2, 4
STAGES = {  # stage -> the pause point of round 1 where it is killed
    "sampling": "online:sampling:1",
    "judging": "online:judging:1",
    "reference": "reference",
    "training": "step:1",
    "heldout": "heldout",
}
PREFER_JUDGE = """
def first_in_order(prompt, answer_1, answer_2):
    return 1 if answer_1 <= answer_2 else 2
"""


def online_args(root: Path, workspace: Path, model: Path) -> list[str]:
    """Two rounds of 4 prompts, 2 one-pair steps each (a reference pass of 2 batches), held-out answers judged."""
    return [
        "online",
        "--workspace",
        str(workspace),
        "--prompts",
        str(root / "prompts.txt"),
        "--judge",
        f"{root / 'judge.py'}:first_in_order",
        "--model",
        str(model),
        "--rounds",
        str(ROUNDS),
        "--per-round",
        str(PER_ROUND),
        "--temperature",
        "2",
        "--max-tokens",
        "4",
        "--iters",
        "2",
        "--batch-size",
        "1",
        "--no-compile",
        "--eval-prompts",
        str(root / "eval.txt"),
        "--heldout-prompts",
        "2",
        "--heldout-samples",
        "1",
        "--json",
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill")
    (root / "prompts.txt").write_text("".join(f"Tell me about thing {i}.\n" for i in range(ROUNDS * PER_ROUND)))
    (root / "eval.txt").write_text("Describe a river.\nDescribe a hill.\n")
    (root / "judge.py").write_text(PREFER_JUDGE)
    return root


def judged(workspace: Path, prompts: Path) -> dict[int, tuple]:
    """What the store holds for the prompt file: position -> (round, pair id, skip id)."""
    if not (workspace / "preferences.sqlite").exists():
        return {}
    with PreferenceStore(workspace) as store:
        return {u.position: (u.round, u.pair_id, u.skip_id) for u in store.online_prompts(str(prompts.resolve()))}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_killed_at_any_stage_of_a_round_goes_on_to_the_same_rounds_losing_and_repeating_no_judgment(
    root, small_model, tmp_path, fresh_cache, stage
):
    workspace, release, prompts = tmp_path / "ws", tmp_path / "release", root / "prompts.txt"
    args = online_args(root, workspace, small_model)
    with held_child(args, {"MLX_DPO_PAUSE_AT": STAGES[stage], "MLX_DPO_PAUSE_FILE": str(release)}, release, stage):
        before = judged(workspace, prompts)  # what the run had committed when it was killed
    assert len(before) == {"sampling": 0, "judging": 1}.get(stage, PER_ROUND)

    restarted = run_console(*args)
    assert restarted.returncode == 0 and "Traceback" not in restarted.stderr, restarted.stderr
    reports = [json.loads(line) for line in restarted.stdout.splitlines() if line.startswith("{")]
    # The restart goes on where the kill stopped: round 1 (unless it had trained), then round 2.
    assert [r["round"] for r in reports] == ([2] if stage == "heldout" else [1, 2])

    after = judged(workspace, prompts)
    # Every prompt judged once, in its round; what was judged before the kill is kept as it was (same pair or skip).
    assert sorted(after) == list(range(ROUNDS * PER_ROUND))
    assert [after[i][0] for i in sorted(after)] == [1 + i // PER_ROUND for i in range(ROUNDS * PER_ROUND)]
    assert all(after[i] == before[i] for i in before)
    with PreferenceStore(workspace) as store:
        pairs, skips, rounds = store.list_pairs(), store.list_skips(), store.list_rounds()
    assert len(pairs) + len(skips) == len(after)  # nothing stored twice, nothing stored outside the file's record
    assert {p.id for p in pairs} == {a[1] for a in after.values() if a[1] is not None}

    # The store and the version folders agree: every folder is a recorded round and every round has its folder.
    folders = {int(p.name[1:]) for p in (workspace / "adapters").iterdir() if p.name.startswith("v")}
    assert folders == {r.version for r in rounds}
    finished = [r for r in rounds if r.status == "finished"]
    assert len(finished) == ROUNDS  # as many rounds as asked for, each trained once
    trained = {i for r in finished for i in r.pair_ids}
    assert {p.id for p in pairs} <= trained  # every judged pair trained by a finished round
    others = [r for r in rounds if r.status != "finished"]
    assert all(r.metrics.get("error") for r in others), others  # a killed round says what happened to it


# Holds the lock of the round folder argv[1], as a process training that round does, until it is killed.
TRAINING = """
import fcntl, sys, time
f = open(sys.argv[1] + "/.round.lock", "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_round_folder_is_recorded_as_interrupted_only_once_its_process_has_ended(workspace):
    root = workspace / "adapters"
    (root / "v1").mkdir(parents=True)
    trainer = subprocess.Popen([sys.executable, "-c", TRAINING, str(root / "v1")], stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout.readline() == "locked\n"
        with PreferenceStore(workspace) as store:
            assert record_interrupted(store, root) == [] and store.list_rounds() == []  # another process trains it
    finally:
        trainer.kill()
        trainer.wait()
    with PreferenceStore(workspace) as store:
        assert record_interrupted(store, root) == [1]
        [record] = store.list_rounds()
    assert (record.version, record.status, record.metrics, record.pair_ids) == (1, "failed", {"error": INTERRUPTED}, [])
