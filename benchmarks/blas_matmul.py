"""fp32 matmul rate of MLX's CPU backend with the optimized BLAS mlx-dpo loads vs the wheel's reference BLAS.

    .venv/bin/python benchmarks/blas_matmul.py
Prints JSON (the same measurement `mlx-dpo doctor --json` makes, at two shapes).
"""

from __future__ import annotations

import json
import os
import platform
import time

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

from mlx_dpo import blas, doctor

SHAPES = [(1024, 576, 1536), (2048, 576, 1536)]


def main() -> None:
    rows = []
    for shape in SHAPES:
        rows.append({"shape": shape, "optimized_gflops": round(doctor.matmul_gflops(shape, repeats=5), 1)})
    reference = doctor.reference_blas_gflops()
    print(
        json.dumps(
            {
                "benchmark": "blas_matmul",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
                "blas": blas.sgemm_provider(),
                "rates": rows,
                "reference_gflops_1024x576x1536": round(reference, 2) if reference else None,
                "speedup": round(rows[0]["optimized_gflops"] / reference, 1) if reference else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
