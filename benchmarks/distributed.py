"""Data-parallel throughput: training pairs/s with 1 rank and with 2 ranks (`mlx.launch`, ring on localhost).

    .venv/bin/python benchmarks/distributed.py [--iters 6] [--batch-size 4] [--model M]

Both runs train the default model (unless --model) on the shipped demo pairs with the same settings
and one shared, pre-warmed reference cache, so only training steps differ. The rate is taken from the
progress lines' arrival times between the first and the last step (the first step pays for warm-up).
On one 2-core machine two ranks share the same two cores (one BLAS thread each), so expect little or
no gain here: this exercises the path. On two machines each rank has its own cores.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
DATA = Path(__file__).resolve().parent.parent / "mlx_dpo" / "data" / "datasets" / "demo_pairs.jsonl"
STEP = re.compile(r"step (\d+)/(\d+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: int, args: argparse.Namespace, home: Path, out: Path) -> dict:
    train = [
        str(BIN / "mlx-dpo"),
        "train",
        "--data",
        str(DATA),
        "--adapter-path",
        str(out),
        "--iters",
        str(args.iters),
        "--batch-size",
        str(args.batch_size),
        "--steps-per-report",
        "1",
        "--save-every",
        str(args.iters),
        "--seed",
        "0",
    ] + (["--model", args.model] if args.model else [])
    if ranks > 1:
        cmd = [
            str(BIN / "mlx.launch"),
            "-n",
            str(ranks),
            "--backend",
            "ring",
            "--hosts",
            "127.0.0.1",
            "--starting-port",
            str(_free_port()),
            "--env",
            "OPENBLAS_NUM_THREADS=1",
            *train,
        ]
    else:
        cmd = train
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "MLX_DPO_HOME": str(home)}
    )
    seen: dict[int, float] = {}
    for line in proc.stderr:
        m = STEP.search(line)
        if m and line.lstrip().startswith("["):
            seen.setdefault(int(m.group(1)), time.perf_counter())
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"{ranks}-rank run failed ({proc.returncode}): {proc.stdout.read()}")
    first, last = min(seen), max(seen)
    seconds = seen[last] - seen[first]
    return {
        "ranks": ranks,
        "timed_steps": last - first,
        "step_seconds": round(seconds / max(last - first, 1), 2),
        "pairs_per_second": round((last - first) * args.batch_size / max(seconds, 1e-9), 3),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--model", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlx-dpo-bench-dist-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        # Warm-up: converts the default model if needed and fills the reference cache both runs then use.
        run(1, argparse.Namespace(**{**vars(args), "iters": 2}), home, Path(tmp) / "warm")
        rows = [run(ranks, args, home, Path(tmp) / f"r{ranks}") for ranks in (1, 2)]
    print(
        json.dumps(
            {
                "benchmark": "distributed",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
                "model": args.model or "default (SmolLM2-135M-Instruct)",
                "global_batch": args.batch_size,
                "runs": rows,
                "speedup_2_ranks": round(rows[1]["pairs_per_second"] / rows[0]["pairs_per_second"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
