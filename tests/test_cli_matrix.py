"""Every method through every command that trains or scores, as a user runs them: the installed `mlx-dpo`
console script, one process per (command, method), on a tiny model.

    methods   each --loss (19 names), KTO on unpaired rows and on pairs, ORPO
    commands  train, eval, online (a program judge), train --workspace --incremental

Each run exits 0, prints its report lines, and writes the metric names the README documents for its method.
Once, `mlx-dpo train --loss kto` on unpaired rows ended in a traceback at its first progress line: the suite ran
KTO through the Python API only, so no test met the console printer.

Kept cheap, since a process's start (Python, mlx-lm, the tokenizer) is most of its cost: a 2-layer model with a
512-token vocabulary (conftest.small_model), one optimizer step (`--iters 1`, `--no-compile`: compiled and
plain steps agree for every loss in tests/test_methods.py), 4 short pairs, no held-out sampling, one reference
cache for the module, and two runs at a time (the `runs` fixture starts the selected cells' processes ahead).
"""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import read_metrics, run_console, user, write_jsonl

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.settings import LOSS_TYPES

# (id, --loss, the data it reads): every loss on pairs, and KTO on unpaired rows too.
METHODS = [(loss, loss, "pairs") for loss in LOSS_TYPES if loss != "kto"] + [
    ("kto-unpaired", "kto", "unpaired"),
    ("kto-pairs", "kto", "pairs"),
]
# A round's KTO trains its store's pairs and its answers marked good or bad together.
ROUND_METHODS = [m for m in METHODS if m[0] != "kto-unpaired"]
EXTRA_FLAGS = {"exo_pair": ["--label-smoothing", "0.001"]}  # EXO needs ε > 0
ONE_STEP = ["--iters", "1", "--batch-size", "2", "--no-compile"]
PARALLEL_RUNS = 2

# The README's metric names ("Training" and "Methods"): every step report has these ...
STEP_METRICS = {
    "step",
    "epoch",
    "loss",
    "learning_rate",
    "tokens_per_second",
    "peak_memory_gb",
    "ref_cache/hits",
    "ref_cache/misses",
}
# ... and each method's own, named as its TRL trainer logs them.
DPO_METRICS = {
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
}
METHOD_METRICS = {
    "orpo": DPO_METRICS | {"nll_loss", "log_odds_ratio", "log_odds_chosen"},
    "kto": (DPO_METRICS - {"rewards/accuracies"}) | {"kl"},
}
# `mlx-dpo eval`'s result: pairs are scored as pairs; KTO scores each answer against its label.
EVAL_KEYS = {"accuracy", "margin", "loss", "n_pairs", "ref_cache/hits", "ref_cache/misses"}
KTO_EVAL_KEYS = {"accuracy", "margin", "loss", "kl", "n_examples", "ref_cache/hits", "ref_cache/misses"}

# A judge that never ties two different answers (which one it prefers does not matter here).
PREFER_JUDGE = """
def first_in_order(prompt, answer_1, answer_2):
    return 1 if answer_1 <= answer_2 else 2
"""


def expected_metrics(loss: str) -> set[str]:
    return STEP_METRICS | METHOD_METRICS.get(loss, DPO_METRICS)


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_model) -> SimpleNamespace:
    """The small model, 4 pairs, 4 unpaired KTO rows, a prompt file and a judge, and a workspace template holding
    the pairs and 2 answers marked good and bad (a KTO round trains them too)."""
    root = tmp_path_factory.mktemp("matrix")
    rows = [{"prompt": f"Name a colour, {i}.", "chosen": f"Blue {i}.", "rejected": f"No {i}."} for i in range(4)]
    pairs = write_jsonl(root / "pairs.jsonl", *rows)
    unpaired = write_jsonl(
        root / "unpaired.jsonl",
        *(
            {"prompt": f"Say yes, {i}.", "completion": "Yes." if i % 2 else "No.", "label": bool(i % 2)}
            for i in range(4)
        ),
    )
    prompts = root / "prompts.txt"
    prompts.write_text("".join(f"Tell me about thing {i}.\n" for i in range(4)))
    judge = root / "judge.py"
    judge.write_text(PREFER_JUDGE)
    template = root / "template"
    with PreferenceStore(template) as store:
        for row in rows:
            store.add_pair(row["prompt"], row["chosen"], row["rejected"])
        store.add_feedback([user("Say yes.")], "Yes.", True)
        store.add_feedback([user("Say no.")], "Maybe.", False)
    return SimpleNamespace(
        root=root,
        model=str(small_model),
        data={"pairs": pairs, "unpaired": unpaired},
        prompts=prompts,
        judge=judge,
        template=template,
    )


def command_args(files, command: str, name: str, loss: str, data: str) -> list[str]:
    """The command line of one cell (its adapter folder or workspace named after the method)."""
    extra = EXTRA_FLAGS.get(loss, [])
    if command == "train":
        return [
            "train",
            "--model",
            files.model,
            "--data",
            str(files.data[data]),
            "--loss",
            loss,
            "--adapter-path",
            str(files.root / "train" / name),
            "--steps-per-report",
            "1",
            *ONE_STEP,
            *extra,
        ]
    if command == "eval":
        return [
            "eval",
            "--model",
            files.model,
            "--data",
            str(files.data[data]),
            "--loss",
            loss,
            "--batch-size",
            "2",
            *extra,
        ]
    workspace = files.root / command / name
    if command == "online":
        return [
            "online",
            "--workspace",
            str(workspace),
            "--prompts",
            str(files.prompts),
            "--judge",
            f"{files.judge}:first_in_order",
            "--model",
            files.model,
            "--loss",
            loss,
            "--rounds",
            "1",
            "--per-round",
            "4",
            "--temperature",
            "2",
            "--max-tokens",
            "4",
            "--heldout-samples",
            "0",
            *ONE_STEP,
            *extra,
        ]
    shutil.copytree(files.template, workspace)  # an incremental round trains the template's pairs and marks
    return [
        "train",
        "--incremental",
        "--workspace",
        str(workspace),
        "--model",
        files.model,
        "--loss",
        loss,
        *ONE_STEP,
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(request, files):
    """The processes of every selected cell of this module, started PARALLEL_RUNS at a time in the order the
    tests come: (command, method id) -> Future of its CompletedProcess."""
    pool = ThreadPoolExecutor(PARALLEL_RUNS)
    futures: dict[tuple[str, str], Future] = {}
    for item in request.session.items:
        if item.module is request.module and hasattr(item, "callspec"):
            command = item.function.__name__.split("_")[1]  # test_<command>_...
            cell = (command, *(item.callspec.params[k] for k in ("name", "loss", "data")))
            futures[cell[:2]] = pool.submit(run_console, *command_args(files, *cell))
    yield futures
    pool.shutdown(cancel_futures=True)


def clean(result) -> None:
    """Exit 0 and nothing that looks like a crash."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def step_line(stderr: str) -> str:
    """The progress line of the run's (only) step: loss and the method's own numbers."""
    lines = [line for line in stderr.splitlines() if "step 1/1" in line]
    assert len(lines) == 1 and re.search(r"loss -?[0-9.]+", lines[0]), stderr
    return lines[0]


def round_metrics(workspace: Path, loss: str) -> None:
    """Round v1 finished and recorded, its metrics file and its record carrying the method's names."""
    with PreferenceStore(workspace) as store:
        [record] = store.list_rounds()
    assert (record.version, record.status) == (1, "finished")
    [metrics] = read_metrics(workspace / "adapters" / "v1" / "metrics.jsonl")
    assert expected_metrics(loss) <= metrics.keys() and expected_metrics(loss) <= record.metrics.keys(), metrics


@pytest.mark.parametrize("name, loss, data", METHODS, ids=[m[0] for m in METHODS])
def test_train_prints_its_progress_and_writes_the_methods_metrics(runs, files, name, loss, data):
    result = runs["train", name].result()
    clean(result)
    line = step_line(result.stderr)
    assert ("kl " in line) == (loss == "kto") and ("acc " in line) == (loss != "kto"), line
    adapter = files.root / "train" / name
    assert f"done: adapter in {adapter}" in result.stderr
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["adapter_path"] == str(adapter) and expected_metrics(loss) <= final.keys(), final
    [metrics] = read_metrics(adapter / "metrics.jsonl")
    assert expected_metrics(loss) <= metrics.keys(), metrics
    assert ("rewards/accuracies" in metrics) == (loss != "kto")


@pytest.mark.parametrize("name, loss, data", METHODS, ids=[m[0] for m in METHODS])
def test_eval_prints_the_methods_scores(runs, name, loss, data):
    result = runs["eval", name].result()
    clean(result)
    scores = json.loads(result.stdout)
    assert scores.keys() == (KTO_EVAL_KEYS if loss == "kto" else EVAL_KEYS), scores
    # KTO reads each pair as two answers, one good and one bad.
    assert scores["n_examples" if loss == "kto" else "n_pairs"] == (8 if data == "pairs" and loss == "kto" else 4)


@pytest.mark.parametrize("name, loss, data", ROUND_METHODS, ids=[m[0] for m in ROUND_METHODS])
def test_online_with_a_program_judge_trains_a_round_and_prints_its_report(runs, files, name, loss, data):
    result = runs["online", name].result()
    clean(result)
    step_line(result.stderr)
    assert re.search(
        r"^round 1: judged 4 prompts' answers from base \(\d pairs, \d ties, \d skips\) · trained v1\b",
        result.stdout,
        re.M,
    ), result.stdout
    round_metrics(files.root / "online" / name, loss)


@pytest.mark.parametrize("name, loss, data", ROUND_METHODS, ids=[m[0] for m in ROUND_METHODS])
def test_incremental_round_prints_its_progress_and_result(runs, files, name, loss, data):
    result = runs["incremental", name].result()
    clean(result)
    step_line(result.stderr)
    final = json.loads(result.stdout.splitlines()[-1])
    assert (final["version"], final["status"]) == (1, "finished") and expected_metrics(loss) <= final.keys(), final
    assert final["new_feedback"] == (2 if loss == "kto" else 0)
    round_metrics(files.root / "incremental" / name, loss)
