"""Shared fixtures. Tests never touch the network: the Hub is forced offline before anything imports it."""

import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
# Converted models and the reference cache go to one throwaway home per test session,
# so a fresh clone tests the first-run path (conversion included) every time.
os.environ.setdefault("MLX_DPO_HOME", tempfile.mkdtemp(prefix="mlx-dpo-test-home-"))

import mlx_dpo  # noqa: E402,F401  # before mlx: picks the BLAS
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model, loaded once (dequantized to fp32 on CPU)."""
    from mlx_dpo.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def default_model_path():
    from mlx_dpo.models import resolve_model_path

    return resolve_model_path(None)

