"""`mlx-dpo doctor`: what this machine gives MLX (device, BLAS, matmul rate, memory, default model), and with
`--model M` which log-prob path that model gets (the self-check of training/fast_path.py)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version

import mlx.core as mx

from mlx_dpo import __version__, blas
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.load import converted_dir, default_gguf, load_model
from mlx_dpo.names import DEFAULT_MODEL_NAME
from mlx_dpo.paths import home
from mlx_dpo.training import distributed, fast_path

# fp32 matmul shape for the rate measurement: the size of an FFN projection over a short batch.
MATMUL_SHAPE = (1024, 576, 1536)


def matmul_gflops(shape: tuple[int, int, int] = MATMUL_SHAPE, repeats: int = 3) -> float:
    """Best-of-`repeats` fp32 matmul rate on MLX's default device, in GFLOP/s."""
    m, k, n = shape
    a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
    mx.eval(a, b, a @ b)  # warm-up: thread pools, kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def reference_blas_gflops() -> float | None:
    """The same rate measured in a child process that keeps the wheel's reference BLAS (Linux CPU)."""
    code = "import mlx_dpo.doctor as d; print(d.matmul_gflops(repeats=1))"
    env = {**os.environ, blas.ENV_VAR: "none"}
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _device() -> str:
    if mx.default_device() == mx.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal-gpu"
    return "cuda-gpu"


def _memory() -> dict:
    info: dict = {}
    try:
        info["total_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        device = mx.device_info()
        if "memory_size" in device:
            info["device_gb"] = round(device["memory_size"] / 1e9, 1)
    except (AttributeError, RuntimeError):
        pass
    return info


def _blas_report(measure_reference: bool) -> dict:
    if not sys.platform.startswith("linux"):
        return {"library": "Accelerate" if sys.platform == "darwin" else None, "optimized": True}
    library = blas.sgemm_provider()
    report = {
        "library": library or "reference BLAS bundled with the mlx wheel",
        "optimized": blas.is_optimized(library),
        "preloaded": blas.STATE.loaded_path,
        "problem": blas.STATE.error,
    }
    if not report["optimized"]:
        report["fix"] = blas.FIX_COMMAND
    if measure_reference and mx.default_device() == mx.cpu:
        report["reference_matmul_gflops"] = reference_blas_gflops()
    return report


def _default_model() -> dict:
    try:
        gguf = default_gguf()
    except MlxDpoError as e:
        return {"name": DEFAULT_MODEL_NAME, "problem": str(e)}
    folder = converted_dir(gguf)
    return {
        "name": DEFAULT_MODEL_NAME,
        "gguf": str(gguf),
        "converted_path": str(folder),
        "converted": (folder / "config.json").is_file(),
    }


def log_prob_path(model_spec: str) -> dict:
    """The log-prob path training and evaluation take on a model (default settings), after the self-check."""
    session = load_model(model_spec)
    line, (shared, full_logits) = fast_path.describe(session.model, session.checks)
    return {"model": model_spec, "shared_prompt": shared, "completion_only_head": not full_logits, "summary": line}


def report(measure: bool = True, model: str | None = None) -> dict:
    """Everything `doctor` shows, as a JSON-able dict. `measure` runs the matmul benchmarks (~2 s);
    `model` loads that model and runs the log-prob self-check on it."""
    rep = {
        "mlx_dpo": __version__,
        "platform": {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()},
        "versions": {name: _version(name) for name in ("mlx", "mlx-lm", "textual", "huggingface-hub")},
        "device": _device(),
        "blas": _blas_report(measure),
        "memory": _memory(),
        "home": str(home()),
        "default_model": _default_model(),
        # Under mlx.launch this joins the group (each rank prints its own report); alone, no network at all.
        "distributed": distributed.group().describe(),
    }
    if model is not None:
        rep["log_prob_path"] = log_prob_path(model)
    if measure:
        rate = matmul_gflops()
        rep["matmul_gflops"] = round(rate, 1)
        ref = rep["blas"].get("reference_matmul_gflops")
        if ref:
            rep["blas"]["reference_matmul_gflops"] = round(ref, 2)
            rep["blas"]["speedup_vs_reference"] = round(rate / ref, 1)
    return rep


def format_report(rep: dict) -> str:
    """A human-readable rendering of `report()`."""
    lines = [
        f"mlx-dpo {rep['mlx_dpo']} on {rep['platform']['system']} {rep['platform']['machine']}"
        f" (Python {rep['platform']['python']})"
    ]
    lines.append("versions: " + ", ".join(f"{k} {v or 'missing'}" for k, v in rep["versions"].items()))
    lines.append(f"device: {rep['device']}")
    b = rep["blas"]
    lines.append(f"BLAS: {b.get('library')} ({'optimized' if b.get('optimized') else 'SLOW reference BLAS'})")
    if "fix" in b:
        lines.append(f"  fix: {b['fix']}")
    if "matmul_gflops" in rep:
        line = f"fp32 matmul: {rep['matmul_gflops']} GFLOP/s"
        if b.get("reference_matmul_gflops"):
            line += f" (reference BLAS: {b['reference_matmul_gflops']} GFLOP/s, {b['speedup_vs_reference']}x)"
        lines.append(line)
    mem = rep["memory"]
    if mem:
        lines.append("memory: " + ", ".join(f"{k.replace('_gb', '')} {v} GB" for k, v in mem.items()))
    lines.append(f"home: {rep['home']}")
    d = rep.get("distributed") or {}
    if d.get("size", 1) > 1:
        lines.append(f"distributed: rank {d['rank']} of {d['size']} over {d['backend']}")
    else:
        lines.append("distributed: one process (start several ranks with mlx.launch)")
    dm = rep["default_model"]
    if "problem" in dm:
        lines.append(f"default model: {dm['problem']}")
    else:
        state = "converted" if dm["converted"] else "not converted yet (converts on first use)"
        lines.append(f"default model: {dm['name']} from {dm['gguf']}\n  {state}: {dm['converted_path']}")
    if "log_prob_path" in rep:
        lines.append(f"model {rep['log_prob_path']['model']}: {rep['log_prob_path']['summary']}")
    return "\n".join(lines)


def main(as_json: bool, measure: bool = True, model: str | None = None) -> int:
    rep = report(measure, model)
    print(json.dumps(rep, indent=2) if as_json else format_report(rep))
    return 0
