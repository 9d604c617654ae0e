"""Helpers the tests share: running the CLI as a user would, and making small real models."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `mlx-dpo ARGS` in a child process; returns the CompletedProcess (text mode)."""
    return subprocess.run(
        [sys.executable, "-m", "mlx_dpo.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def console_script() -> Path:
    """The installed `mlx-dpo` console script, next to this interpreter: the command a user types."""
    return Path(sys.executable).with_name("mlx-dpo")


def run_console(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `mlx-dpo ARGS` (the console script, not `python -m`); returns the CompletedProcess."""
    return subprocess.run(
        [console_script(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


@contextmanager
def held_child(args: list[str], hook: dict[str, str], release: Path, where: str) -> Iterator[subprocess.Popen]:
    """Run `mlx-dpo ARGS` in a child with a pause hook set (training/pause.py), yield once it holds at `where`
    (it wrote `<release>.reached`), then SIGKILL it there: the kill lands at the same point on any machine."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_dpo.cli", *args],
        cwd=REPO,
        env={**os.environ, **hook},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300  # only a hung child takes this long; the test does not time the run
        while not Path(f"{release}.reached").is_file():
            assert proc.poll() is None, f"the run ended before {where}"
            assert time.monotonic() < deadline, f"the run did not reach {where}"
            time.sleep(0.05)
        yield proc
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def make_tiny_model_folder(
    out: Path, tokenizer_from: Path, *, layers: int = 2, hidden: int = 64, seed: int = 0
) -> Path:
    """A small random llama in mlx-lm's folder layout, with the default model's tokenizer."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    config = json.loads((tokenizer_from / "config.json").read_text())
    config.pop("quantization", None)
    config.update(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
    )
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_from / name, out / name)
    return out


# --- pair files and messages (test_pairs.py, test_store.py, test_prompt_queue.py) ----------------------------


def write_jsonl(path: Path, *rows: dict | str) -> Path:
    """Each row is a dict (dumped as JSON) or a raw string (written as is, e.g. a broken line)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


# --- training runs (test_training.py, test_train_cli.py) ----------------------------------------------------

# Fields of a metrics line that measure the machine or the reference cache, not the training itself.
TIMING_FIELDS = frozenset({"tokens_per_second", "peak_memory_gb", "ref_pass_seconds"})


def write_demo_pairs(path: Path, count: int, start: int = 0) -> Path:
    """A JSONL file holding `count` rows of the shipped demo pairs, from row `start` on."""
    from mlx_dpo.data.pairs import DEMO_PAIRS_PATH

    rows = [line for line in DEMO_PAIRS_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]
    chosen = rows[start : start + count]
    assert len(chosen) == count, f"the demo set has only {len(rows)} rows"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


def read_metrics(path: Path) -> list[dict]:
    """Every line of a metrics.jsonl file (each must be whole, valid JSON)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def without_timing(row: dict) -> dict:
    """A metrics line minus throughput, memory and reference-cache fields."""
    return {k: v for k, v in row.items() if k not in TIMING_FIELDS and not k.startswith("ref_cache/")}


# --- the terminal app (test_tui.py, test_tui_snapshots.py, tui_labeler.py) ------------------------------------


MODEL_READY_TIMEOUT = 120.0  # seconds: loading even the tiny model is slow while a training child runs


async def model_ready(pilot, timeout: float = MODEL_READY_TIMEOUT) -> None:
    """Wait until the app's model has loaded, then until the app has handled what that set off (the
    snapshots need the screen settled). Pilot's key presses wait for the whole process to go idle, so a
    key pressed while the model thread loads could take up to two seconds."""
    await wait_until(pilot, lambda: pilot.app.model_state == "ready", timeout=timeout, what="the model")
    await pilot.pause()


def errors(app) -> list[str]:
    """The error notices the app has shown, oldest first."""
    return [text for severity, text in app.notices if severity == "error"]


def warnings(app) -> list[str]:
    return [text for severity, text in app.notices if severity == "warning"]


async def wait_until(pilot, condition, *, timeout: float = 30.0, what: str = "the condition") -> None:
    """Let the app run until `condition()` is true; fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await pilot.pause(0.02)


async def sample_answers(pilot, prompt: str | None = None, *, timeout: float = 60.0) -> tuple[str, str]:
    """On the Label screen: type `prompt` into the (focused) prompt editor, press ctrl+s, wait for both answers."""
    screen = pilot.app.get_screen("label")
    if prompt is not None:
        await type_text(pilot, prompt)
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: screen.state == "ready", timeout=timeout, what="both answers")
    return screen.answers()


async def type_text(pilot, text: str) -> None:
    """Type `text` into the focused widget: one key event per character, as a terminal sends them.

    Pilot.press waits for the whole process to go idle after every key (~60 ms each, and up to 2 s while
    the model thread works); here the keys are queued together and the app is waited for once.
    """
    from textual import events
    from textual.keys import _character_to_key

    for char in text:
        key = char if char.isalnum() else _character_to_key(char)
        pilot.app.post_message(events.Key(key, char))
    for _ in range(3):
        await pilot.pause(0)
    await pilot.pause()


# --- adapters and exports (test_export.py) ---------------------------------------------------------------------


def make_adapter(
    model_spec: str | None,
    out: Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    seed: int = 0,
    dora: bool = False,
    num_layers: int = -1,
    keys: list[str] | None = None,
    base_model: str | None = None,
    dequantize: bool | None = False,
    extra: dict | None = None,
) -> Path:
    """An adapter folder as training writes it, with random non-zero LoRA B (and A) instead of trained ones.

    Training only changes the numbers, not the layout; this is the quick way to an adapter for bases a
    test does not want to train on (another size, another architecture, the default model).
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    from mlx_dpo.models.adapter import LoraSettings, adapter_config, add_adapter, save_adapter
    from mlx_dpo.names import DEFAULT_MODEL_NAME

    model = bare_model(model_spec, dequantize=dequantize)
    settings = LoraSettings(rank=rank, alpha=alpha, num_layers=num_layers, keys=keys, dora=dora)
    mx.random.seed(seed)
    add_adapter(model, settings)
    params = dict(tree_flatten(model.trainable_parameters()))
    update = {k: 0.05 * mx.random.normal(v.shape) for k, v in params.items() if k.endswith("lora_b")}
    model.update(tree_unflatten(list(update.items())))
    mx.eval(model.parameters())
    extra = {"num_pairs": 8, "beta": 0.1, "loss_type": "sigmoid", "reference": "start", **(extra or {})}
    name = base_model if base_model is not None else (model_spec or DEFAULT_MODEL_NAME)
    save_adapter(Path(out), model, adapter_config(settings, model, name, extra=extra))
    return Path(out)


def bare_model(model_spec: str | None, *, adapter: Path | None = None, dequantize: bool | None = False):
    """The model alone (no tokenizer: loading one takes longer than a tiny model), with mlx-lm's own
    adapter loader applied when `adapter` is given. `dequantize` as in mlx_dpo.models.load.load_model."""
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import dequantize_model
    from mlx_lm.utils import load_model as mlx_load_model

    from mlx_dpo.models.load import has_quantized_layers, resolve_model_path, should_dequantize

    model, _ = mlx_load_model(resolve_model_path(model_spec))
    if (should_dequantize() if dequantize is None else dequantize) and has_quantized_layers(model):
        dequantize_model(model)
        model.set_dtype(mx.float32)
    if adapter is not None:
        load_adapters(model, str(adapter))
        model.eval()
    mx.eval(model.parameters())
    return model


def hub_dataset(hf_home: Path, repo_id: str, files: dict[str, list[dict] | str], commit: str = "c" * 40) -> Path:
    """A Hub dataset as huggingface_hub's cache holds it (`$HF_HOME/hub/datasets--owner--name/refs/main` and
    `snapshots/<commit>/...`), which it resolves offline: `files` maps a path in the repo to rows (written as
    Parquet, JSON Lines or gzipped JSON Lines by its suffix) or to text (a README.md card). Returns the snapshot
    folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    owner, name = repo_id.split("/")
    repo = hf_home / "hub" / f"datasets--{owner}--{name}"
    snapshot = repo / "snapshots" / commit
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for rel, content in files.items():
        path = snapshot / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        elif path.suffix == ".parquet":
            pq.write_table(pa.Table.from_pylist(content), path)
        elif path.suffix == ".gz":
            path.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in content).encode()))
        else:
            write_jsonl(path, *content)
    return snapshot


# --- conversations (test_threads.py, test_tui_conversation.py) -----------------------------------------------


def thread_shapes(store) -> list:
    """A store's conversation trees by content alone (no ids, no times): each turn as (prompt, chosen, rejected,
    [the turns that continue it]), so two stores holding the same threads give equal shapes, whatever order the
    pairs were added in."""

    def shape(node) -> tuple:
        p = node.pair
        return (json.dumps(p.prompt), str(p.chosen), str(p.rejected), sorted(shape(c) for c in node.children))

    return sorted(shape(root) for root in store.threads.trees())


# TRL's DPOTrainer names for what a training report carries.
TRL_STEP_FIELDS = {
    "step",
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "learning_rate",
}
