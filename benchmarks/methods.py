"""Does each method learn the demo preferences? Held-out preference accuracy before and after a short run.

    .venv/bin/python benchmarks/methods.py [--iters 20] [--methods sigmoid,ipo,orpo,kto,...]

The shipped demo pairs (mlx_dpo/data/datasets/demo_pairs.jsonl) are split: every fifth pair is held out,
the rest train. For the default model (SmolLM2-135M) the script trains each method for `--iters` steps and
measures, on the held-out pairs, the share where the model gives the chosen answer a higher per-token
log-prob than the rejected one (a reference-free accuracy, so the base model has one too and every
method, KTO and ORPO included, is judged by the same rule). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

from mlx_dpo.data.pairs import DEMO_PAIRS_PATH, load_pairs
from mlx_dpo.models.load import load_model
from mlx_dpo.training.run import evaluate, train

METHODS = {
    "sigmoid": {},
    "ipo": {},
    "hinge": {},
    "simpo": {"beta": 2.0},
    "orpo": {},
    "kto": {},
    "sigmoid,sft": {"loss_weights": [1, 0.5]},
    "apo_zero": {},
    "bco_pair": {},
    "sigmoid_norm": {},
    "cdpo": {"label_smoothing": 0.1},
    "robust": {"label_smoothing": 0.1},
    "exo_pair": {"label_smoothing": 1e-3},
    "nca_pair": {},
    "sppo_hard": {},
    "aot": {},
    "aot_unpaired": {},
    "apo_down": {},
    "discopop": {},
    "sft": {},
}


def preference_accuracy(model, pairs, adapter: Path | None, work: Path) -> float:
    rows_path = work / f"rows-{time.monotonic_ns()}.jsonl"
    evaluate(pairs, loaded=model(), adapter_path=adapter, per_example=rows_path)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    won = [
        r["policy_chosen_logp"] / r["chosen_tokens"] > r["policy_rejected_logp"] / r["rejected_tokens"] for r in rows
    ]
    return sum(won) / len(won)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--methods", default=",".join(METHODS).replace("sigmoid,sft", "sigmoid+sft"))
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    args = parser.parse_args()
    pairs = load_pairs(DEMO_PAIRS_PATH).pairs
    held_out = [p for i, p in enumerate(pairs) if i % 5 == 4]
    train_pairs = [p for i, p in enumerate(pairs) if i % 5 != 4]
    work = Path(tempfile.mkdtemp(prefix="mlx-dpo-methods-"))
    start = time.perf_counter()
    base = preference_accuracy(load_model, held_out, None, work)
    print(json.dumps({"method": "base", "held_out_accuracy": round(base, 3)}), flush=True)
    results = []
    for name in args.methods.split(","):
        loss_type = name.replace("+", ",")
        t0 = time.perf_counter()
        out = work / loss_type.replace(",", "+")
        result = train(
            train_pairs,
            loaded=load_model(),
            adapter_path=out,
            loss_type=loss_type,
            iters=args.iters,
            batch_size=4,
            learning_rate=args.learning_rate,
            steps_per_report=args.iters,
            **METHODS.get(loss_type, {}),
        )
        accuracy = preference_accuracy(load_model, held_out, out, work)
        results.append(
            {
                "method": loss_type,
                "held_out_accuracy": round(accuracy, 3),
                "above_base": accuracy > base,
                "final_loss": round(result.metrics.get("loss", float("nan")), 4),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    print(
        json.dumps(
            {
                "benchmark": "methods",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.system()} {platform.machine()}",
                "model": "SmolLM2-135M (default)",
                "train_pairs": len(train_pairs),
                "held_out_pairs": len(held_out),
                "iters": args.iters,
                "learning_rate": args.learning_rate,
                "base_held_out_accuracy": round(base, 3),
                "methods": results,
                "seconds": round(time.perf_counter() - start, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
