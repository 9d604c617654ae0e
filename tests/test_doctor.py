"""`mlx-dpo doctor` and the Linux BLAS preload."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import run_cli

from mlx_dpo import blas

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")


def doctor_json(**env: str) -> dict:
    result = run_cli("doctor", "--json", "--no-measure", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_doctor_reports_versions_device_memory_and_default_model():
    rep = doctor_json()
    assert rep["versions"]["mlx"] and rep["versions"]["mlx-lm"] and rep["versions"]["textual"]
    assert rep["device"] in ("cpu", "metal-gpu", "cuda-gpu")
    assert rep["memory"]["total_gb"] > 0
    assert rep["default_model"]["name"] == "SmolLM2-135M-Instruct"
    assert rep["default_model"]["gguf"].endswith(".gguf")


@linux_only
def test_doctor_names_the_optimized_blas_mlx_binds_to():
    if not blas.candidates():
        pytest.skip("no optimized BLAS installed on this machine")
    rep = doctor_json()
    assert rep["blas"]["optimized"] is True
    assert rep["blas"]["library"] == rep["blas"]["preloaded"]


@linux_only
def test_with_the_swap_disabled_doctor_shows_the_reference_blas_and_the_fix():
    rep = doctor_json(MLX_DPO_BLAS="none")
    assert rep["blas"]["optimized"] is False
    assert "reference" in rep["blas"]["library"]
    assert rep["blas"]["fix"] == blas.FIX_COMMAND


@linux_only
def test_doctor_measures_both_rates_in_one_run():
    result = run_cli("doctor", "--json")
    rep = json.loads(result.stdout)
    assert rep["matmul_gflops"] > 0
    assert rep["blas"]["reference_matmul_gflops"] > 0
    assert rep["blas"]["speedup_vs_reference"] == pytest.approx(
        rep["matmul_gflops"] / rep["blas"]["reference_matmul_gflops"], rel=0.05
    )


@linux_only
def test_missing_blas_warns_once_with_the_fix():
    code = (
        "import warnings, mlx_dpo; from mlx_dpo import blas\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always'); blas.warn_if_slow(); blas.warn_if_slow()\n"
        "print(len(w)); print(w[0].message)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"MLX_DPO_BLAS": "/nonexistent/libblas.so", "PATH": ""},
    )
    count, message = out.stdout.splitlines()[:2]
    assert count == "1"
    assert blas.FIX_COMMAND in message


@linux_only
def test_importing_mlx_before_mlx_dpo_is_detected():
    code = "import mlx.core, mlx_dpo; from mlx_dpo import blas; print(blas.STATE.mlx_imported_first)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "True"
