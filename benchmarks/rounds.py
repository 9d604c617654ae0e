"""Which round settings help? Rounds on the default model with 1 and 4 new pairs, and a few rounds in sequence.

    .venv/bin/python benchmarks/rounds.py [--plan default,app_default_4,app_before,...] [--max-tokens 32]

The shipped demo pairs (mlx_dpo/data/datasets/demo_pairs.jsonl) are split as in benchmarks/methods.py: every
fifth pair is a validation pair of the workspace (split "valid"), the rest are labelled a few at a time. Each
entry of the plan is a fresh workspace that trains a sequence of rounds (e.g. 1, 4 and 4 new pairs; each round
replays older pairs by its `replay` share) with one setting, through `mlx_dpo.training.rounds.run_round`: the
app's rounds. After every round the script records the round's steps, its last step's loss and margin (what
the app's Train screen shows), the loss and margin of the round's new pairs after the round (`run.evaluate`),
and the round's held-out numbers (training/heldout.py): preference accuracy on the validation pairs, and, in a
sequence's last round, the KL to the base from 2 samples on each of the first 4 validation prompts. Prints one
JSON line per round, then a summary line. On this 2-core CPU a round takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

from mlx_dpo.data.pairs import DEMO_PAIRS_PATH, load_pairs
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.models.load import load_model
from mlx_dpo.training import rounds
from mlx_dpo.training.run import evaluate

# name -> (round settings, new pairs per round). "default": the library's defaults (what the app's Train
# fields start with). "app_before": the app's round before round lengths followed the data (20 steps). The
# others change one setting of the default.
PLAN = {
    "default_1": ({}, (1,)),
    "default_4": ({}, (4,)),
    "app_before": ({"iters": 20}, (1,)),
    "lr_2e-4": ({"learning_rate": 2e-4}, (1,)),
    "lr_2e-5": ({"learning_rate": 2e-5}, (1,)),
    "beta_0.3": ({"beta": 0.3}, (1,)),
    "passes_4": ({"passes": 4}, (1,)),
    "default": ({}, (1, 4, 4)),
    "replay_0": ({"replay": 0}, (1, 4, 4)),
    "replay_1": ({"replay": 1}, (1, 4, 4)),
}


def add_pairs(workspace: Path, pairs, split: str = "train") -> None:
    with PreferenceStore(workspace) as store:
        for p in pairs:
            store.add_pair(p.prompt, p.chosen, p.rejected, origin="imported", split=split)


def new_pairs_after(loaded, pairs, adapter: Path, beta: float) -> dict:
    """Loss and margin of the round's new pairs with the round's adapter (after its last update)."""
    result = evaluate(pairs, loaded=loaded, adapter_path=adapter, beta=beta)
    return {"new_pairs_loss_after": round(result["loss"], 4), "new_pairs_margin_after": round(result["margin"], 4)}


def row_of(name: str, index: int, result, after: dict, seconds: float) -> dict:
    m = result.metrics
    pick = lambda k: None if m.get(k) is None else round(m[k], 4)  # noqa: E731
    return {
        "setting": name,
        "round": index,
        "new_pairs": m["new_pairs"],
        "replayed_pairs": m["replayed_pairs"],
        "steps": m["steps"],
        "last_step_loss": pick("loss"),
        "last_step_margin": pick("rewards/margins"),
        **after,
        "heldout_accuracy": pick("heldout/accuracy"),
        "heldout_margin": pick("heldout/margin"),
        "heldout_kl": pick("heldout/kl"),
        "base_heldout_accuracy": pick("heldout_base/accuracy"),
        "seconds": round(seconds, 1),
    }


def run_sequence(
    name: str,
    settings: dict,
    sizes,
    loaded,
    train_pool,
    valid,
    work: Path,
    base_file: Path | None,
    sample: SampleSettings,
) -> list[dict]:
    workspace = work / name
    add_pairs(workspace, valid, split="valid")
    if base_file is not None and base_file.is_file():  # the base's held-out answers: sampled once for all
        (workspace / "heldout").mkdir(parents=True, exist_ok=True)
        shutil.copy(base_file, workspace / "heldout" / "base.json")
    rows, used = [], 0
    for index, size in enumerate(sizes, 1):
        new = train_pool[used : used + size]
        used += size
        add_pairs(workspace, new)
        start = time.perf_counter()
        # KL samples in the sequence's last round only: sampling is the slow part of a measurement on CPU.
        last = index == len(sizes)
        result = rounds.run_round(
            workspace,
            settings={**settings, "heldout_prompts": 4, "heldout_samples": 2 * last},
            loaded=loaded,
            sample_settings=sample,
        )
        seconds = time.perf_counter() - start
        after = new_pairs_after(loaded, new, result.adapter_path, result_beta(workspace))
        rows.append(row_of(name, index, result, after, seconds))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def result_beta(workspace: Path) -> float:
    with PreferenceStore(workspace) as store:
        return store.list_rounds()[-1].settings["beta"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plan", default=",".join(PLAN))
    parser.add_argument("--max-tokens", type=int, default=32, help="held-out answers' length")
    args = parser.parse_args()
    pairs = load_pairs(DEMO_PAIRS_PATH).pairs
    valid = [p for i, p in enumerate(pairs) if i % 5 == 4]
    train_pool = [p for i, p in enumerate(pairs) if i % 5 != 4]
    work = Path(tempfile.mkdtemp(prefix="mlx-dpo-rounds-"))
    os.environ.setdefault("MLX_DPO_HOME", str(work / "home"))  # a cold reference cache, shared by the settings
    sample = SampleSettings(temperature=0.7, max_tokens=args.max_tokens)
    loaded = load_model()
    start = time.perf_counter()
    rows = []
    base_file = None
    for name in args.plan.split(","):
        settings, sizes = PLAN[name]
        rows += run_sequence(name, settings, sizes, loaded, train_pool, valid, work, base_file, sample)
        if (work / name / "heldout" / "base.json").is_file():
            base_file = work / name / "heldout" / "base.json"
    summary = {
        "summary": True,
        "rounds": len(rows),
        "valid_pairs": len(valid),
        "heldout_prompts": 4,
        "samples_per_prompt": 2,
        "max_tokens": args.max_tokens,
        "seconds": round(time.perf_counter() - start),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "model": loaded.name,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
