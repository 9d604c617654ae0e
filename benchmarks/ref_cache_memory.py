"""No second model: peak memory of a whole `mlx-dpo train` run with a cold vs a warm reference cache.

Runs the same short training twice in child processes sharing one fresh MLX_DPO_HOME: first with
an empty reference cache (the reference pass runs), then with the cache warm (it does not).
Prints JSON: each run's peak RSS and MLX peak memory, reference misses and the cold/warm ratio.

    .venv/bin/python benchmarks/ref_cache_memory.py [--iters 4] [--lora-layers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "mlx_dpo" / "datasets" / "demo_pairs.jsonl"


def run_training(home: Path, adapter: Path, iters: int, lora_layers: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "mlx_dpo.cli",
        "train",
        "--data",
        str(DATA),
        "--adapter-path",
        str(adapter),
        "--iters",
        str(iters),
        "--lora-layers",
        str(lora_layers),
        "--batch-size",
        "4",
        "--steps-per-report",
        str(iters),
        "--seed",
        "0",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "MLX_DPO_HOME": str(home)},
        cwd=REPO,
    )
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"training failed: {cmd}")
    final = json.loads(stdout.strip().splitlines()[-1])
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "max_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 3),  # ru_maxrss is KiB on Linux
        "mlx_peak_memory_gb": round(final["peak_memory_gb"], 3),
        "ref_cache_misses": final["ref_cache/misses"],
        "ref_pass_seconds": final["ref_pass_seconds"],
        "loss": final["loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--lora-layers", type=int, default=8)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        # Convert the default model first so neither measured run pays for (or holds memory of) conversion.
        subprocess.run(
            [sys.executable, "-m", "mlx_dpo.cli", "convert"],
            check=True,
            capture_output=True,
            env={**os.environ, "MLX_DPO_HOME": str(home)},
        )
        cold = run_training(home, Path(tmp) / "cold", a.iters, a.lora_layers)
        warm = run_training(home, Path(tmp) / "warm", a.iters, a.lora_layers)
    print(
        json.dumps(
            {
                "benchmark": "ref_cache_memory",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
                "model": "SmolLM2-135M-Instruct (default)",
                "pairs": sum(1 for _ in open(DATA)),
                "iters": a.iters,
                "cold": cold,
                "warm": warm,
                "rss_ratio_cold_over_warm": round(cold["max_rss_gb"] / warm["max_rss_gb"], 3),
                "mlx_peak_ratio_cold_over_warm": round(cold["mlx_peak_memory_gb"] / warm["mlx_peak_memory_gb"], 3),
                "same_loss": cold["loss"] == warm["loss"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
