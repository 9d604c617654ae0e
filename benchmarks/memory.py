"""How close is the memory estimate (mlx_dpo/training/memory.py) to the measured peak? Prints JSON.

    .venv/bin/python benchmarks/memory.py [--model PATH] [--sizes 2x128,2x512]

Each size is a micro-batch of pairs x tokens per answer (the prompt is short); one training step runs
(no compile), and the run's reported `peak_memory_gb` (mx.get_peak_memory over the reference pass and the
step) is set against the estimate the run printed in its Status line.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx

from mlx_dpo.api import train
from mlx_dpo.data.pairs import PreferencePair, write_pairs
from mlx_dpo.events import Status, StepMetrics


def pairs(count: int, words: int) -> list[PreferencePair]:
    return [
        PreferencePair(
            f"p{i}",
            [{"role": "user", "content": f"Write about topic {i}."}],
            " ".join(["good"] * words),
            " ".join(["bad"] * words),
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--sizes", default="2x128,2x512,4x256")
    parser.add_argument("--grad-checkpoint", action="store_true")
    options = parser.parse_args()
    rows = []
    for size in options.sizes.split(","):
        n, words = (int(x) for x in size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "pairs.jsonl"
            write_pairs(data, pairs(n, words))
            events = []
            mx.reset_peak_memory()
            train(
                data,
                model=options.model,
                adapter_path=Path(tmp) / "adapter",
                iters=1,
                batch_size=n,
                max_length=4 * words,
                compile=False,
                grad_checkpoint=options.grad_checkpoint,
                on_event=events.append,
            )
        line = next(e.message for e in events if isinstance(e, Status) and e.message.startswith("memory:"))
        measured = next(e.metrics["peak_memory_gb"] for e in events if isinstance(e, StepMetrics))
        estimate = float(re.search(r"about ([0-9.]+) GB", line).group(1))
        rows.append(
            {
                "batch": size,
                "estimate_gb": estimate,
                "measured_peak_gb": round(measured, 3),
                "ratio": round(estimate / measured, 2),
                "status": line,
            }
        )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
