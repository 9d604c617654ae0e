"""Make MLX's CPU backend use an optimized BLAS on Linux.

The Linux `mlx-cpu` wheel links a bundled reference BLAS (~80x slower matmuls than OpenBLAS).
libmlx resolves `cblas_sgemm` & co. through the dynamic linker, so loading an optimized CBLAS
into the global symbol scope *before* `mlx.core` is first imported makes MLX use it.
This module must not import mlx; `mlx_dpo/__init__.py` calls `preload()` before anything else.
macOS (Accelerate) is left alone.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

# Set to "none" to keep the wheel's reference BLAS (used by `doctor` to measure the difference),
# or to the path of a CBLAS shared library to use that one.
ENV_VAR = "MLX_DPO_BLAS"
FIX_COMMAND = "sudo apt-get install libopenblas0-pthread"


@dataclass
class BlasState:
    requested: str | None = None  # value of MLX_DPO_BLAS
    loaded_path: str | None = None  # library we put in the global scope
    error: str | None = None
    mlx_imported_first: bool = False  # mlx.core was already imported: too late to swap BLAS
    warned: bool = False


STATE = BlasState()


def candidates() -> list[str]:
    """Optimized CBLAS libraries in order of preference: MKL from the venv, then system OpenBLAS."""
    found: list[str] = []
    prefixes = {sys.prefix, sysconfig.get_config_var("prefix") or sys.prefix}
    for prefix in prefixes:
        # PyPI's `mkl` wheel installs libmkl_rt into <prefix>/lib; it exports unprefixed cblas_*.
        found += sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
    arch = os.uname().machine
    for libdir in (f"/usr/lib/{arch}-linux-gnu", "/usr/lib64", "/usr/lib"):
        found += [
            f"{libdir}/openblas-pthread/libblas.so.3",
            f"{libdir}/openblas-openmp/libblas.so.3",
            f"{libdir}/libopenblas.so.0",
            f"{libdir}/openblas-serial/libblas.so.3",
        ]
    return [p for p in dict.fromkeys(found) if os.path.exists(p)]


def preload() -> None:
    """Load the best CBLAS into the global scope, once, before MLX is imported (Linux only)."""
    if not sys.platform.startswith("linux") or STATE.requested is not None:
        return
    STATE.requested = os.environ.get(ENV_VAR, "auto")
    if "mlx.core" in sys.modules:
        STATE.mlx_imported_first = True
        STATE.error = "mlx.core was imported before mlx_dpo; import mlx_dpo first"
        return
    if STATE.requested.lower() == "none":
        return
    paths = [STATE.requested] if STATE.requested != "auto" else candidates()
    for path in paths:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            STATE.error = f"could not load {path}: {e}"
            continue
        STATE.loaded_path = path
        STATE.error = None
        return
    if not paths:
        STATE.error = "no optimized BLAS (OpenBLAS or MKL) found"


def sgemm_provider() -> str | None:
    """The shared library that `cblas_sgemm` resolves to in this process, as the linker sees it."""
    if not sys.platform.startswith("linux"):
        return None

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    try:
        import mlx.core  # noqa: F401  # make sure libmlx and its own BLAS are loaded too

        process = ctypes.CDLL(None)
        address = ctypes.cast(process.cblas_sgemm, ctypes.c_void_p)
        libc = ctypes.CDLL("libc.so.6")
        libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        info = DlInfo()
        if libc.dladdr(address, ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(info.dli_fname.decode())
    except (AttributeError, OSError):
        pass
    return None


def is_optimized(path: str | None) -> bool:
    """True when `path` is an optimized BLAS rather than the reference one MLX's wheel bundles."""
    if not path:
        return False
    name = Path(path).name.lower()
    return "openblas" in path.lower() or "mkl" in name or "blis" in name


def warn_if_slow() -> None:
    """Warn once per process when MLX computes on the CPU with the reference BLAS."""
    if not sys.platform.startswith("linux") or STATE.warned or STATE.loaded_path:
        return
    if (STATE.requested or "").lower() == "none":
        return
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return
    STATE.warned = True
    reason = STATE.error or "no optimized BLAS loaded"
    warnings.warn(
        f"mlx-dpo: {reason}; MLX matmuls on this CPU will be ~80x slower. Fix: {FIX_COMMAND}",
        RuntimeWarning,
        stacklevel=2,
    )
