"""`make bench`: run every benchmark script in this folder and print one JSON document."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["blas_matmul.py", "throughput.py", "ref_cache_memory.py", "tui_latency.py", "sampling.py", "online_round.py"]


def main() -> None:
    results = {}
    for script in SCRIPTS:
        out = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True, check=True)
        results[script.removesuffix(".py")] = json.loads(out.stdout)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
