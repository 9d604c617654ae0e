"""Shared fixtures. Tests never touch the network: the Hub is forced offline before anything imports it."""

import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
# Converted models and the reference cache go to one throwaway home per test process, so a fresh clone
# tests the first-run path (conversion included) every time. Each pytest-xdist worker gets its own, so
# workers never convert the default model into one folder at once.
if os.environ.get("PYTEST_XDIST_WORKER") or "MLX_DPO_HOME" not in os.environ:
    os.environ["MLX_DPO_HOME"] = tempfile.mkdtemp(prefix="mlx-dpo-test-home-")

import mlx_dpo  # noqa: E402,F401  # before mlx: picks the BLAS
import pytest  # noqa: E402

from helpers import make_tiny_model_folder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model, loaded once (dequantized to fp32 on CPU)."""
    from mlx_dpo.models.load import load_model

    return load_model()


@pytest.fixture(scope="session")
def default_model_path():
    from mlx_dpo.models.load import resolve_model_path

    return resolve_model_path(None)


@pytest.fixture(scope="module")
def tiny(request, tmp_path_factory, default_model_path) -> Path:
    """A small random llama (2 layers, hidden size 64) with the default model's tokenizer: one folder per test
    module, named tiny-llama (the app shows that name, so the snapshots depend on it).

    A module sets `TINY_SEED = N` for weights of its own. The reference cache lives for the whole session and
    is keyed by the weights, so a module that counts cache hits and misses must not share its model.
    """
    seed = getattr(request.module, "TINY_SEED", 0)
    return make_tiny_model_folder(tmp_path_factory.mktemp("models") / "tiny-llama", default_model_path, seed=seed)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """A reference cache nobody has filled yet (MLX_DPO_HOME is read when a cache opens)."""
    home = tmp_path / "mlx-dpo-home"
    monkeypatch.setenv("MLX_DPO_HOME", str(home))
    return home


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A workspace folder that does not exist yet (the store creates it)."""
    return tmp_path / "workspace"


@pytest.fixture
def anyio_backend():
    """The async tests (`pytest.mark.anyio`, the app under Pilot) run on asyncio: Textual's loop."""
    return "asyncio"


# The longest files start first: `make test` hands whole files to the workers (pytest-xdist's loadfile), and a
# long file handed out last would leave one worker running alone at the end. Rough serial seconds, 2026-12-02.
LONGEST_FILES_FIRST = ("test_gemma3.py", "test_training.py", "test_tui_train.py", "test_train_options.py", "test_tui.py",
                       "test_online.py", "test_tui_online.py", "test_models.py", "test_export.py", "test_train_cli.py",
                       "test_families.py", "test_distributed.py", "test_methods.py", "test_rounds.py",
                       "test_family_exports.py", "test_step_paths.py", "test_tui_snapshots.py", "test_gguf.py",
                       "test_tui_export.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
