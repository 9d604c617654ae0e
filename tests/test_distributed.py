"""Data-parallel training over mx.distributed: real ranks on localhost with MLX's ring backend.

Two ranks with a global batch of 4 must train exactly what one rank with a batch of 4 trains; a run
continues with another number of ranks; a broken group (a killed rank, a rank that never connects,
different settings) stops every rank with one line naming the rank, never a hang.

The equality run goes through `mlx.launch`, as a user starts it. The failure tests start the two
ranks themselves with the same environment `mlx.launch` gives them (MLX_RANK, MLX_HOSTFILE): the
launcher tears the whole group down when one rank dies, and the point here is what the survivor
says on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from helpers import read_metrics, write_demo_pairs

from mlx_dpo import api
from mlx_dpo.training import checkpoint
from mlx_dpo.training.distributed import Group

TINY_SEED = 16
BIN = Path(sys.executable).parent
MLX_DPO, MLX_LAUNCH = str(BIN / "mlx-dpo"), str(BIN / "mlx.launch")
HANG = 120  # seconds: only a hang (a bug) gets near this; it is not a speed bound
# Adam turns a gradient element near zero into a step of about +-lr whatever its rounding, so a small lr keeps
# float32's different summation order on two ranks well inside 1e-5 of the adapter.
SETTINGS = dict(
    batch_size=4,
    iters=3,
    learning_rate=1e-4,
    steps_per_report=1,
    save_every=2,
    seed=4,
    compile=False,
    max_length=64,
    max_prompt_length=40,
)  # short sequences: the tiny model still has the 49k-token vocabulary
# Two ranks on one 2-core machine: one BLAS thread each, or their threads spin against each other.
ENV = {"OPENBLAS_NUM_THREADS": "1"}


def _flags(settings: dict) -> list[str]:
    flags = []
    for name, value in settings.items():
        if value is False:
            flags.append(f"--no-{name.replace('_', '-')}")
        else:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_ranks(tmp: Path, argv_of_rank: list[list[str]], **env: str) -> list[subprocess.Popen]:
    """The ranks as `mlx.launch --backend ring` starts them on one host, without the launcher around them."""
    hostfile = tmp / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in _free_ports(len(argv_of_rank))]))
    return [
        subprocess.Popen(
            [MLX_DPO, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **ENV, **env, "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)},
        )
        for rank, argv in enumerate(argv_of_rank)
    ]


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("mlx-dpo: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _adapter(folder: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in mx.load(str(folder / "adapters.safetensors")).items()}


def _assert_same_adapter(a: Path, b: Path) -> None:
    wa, wb = _adapter(a), _adapter(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], atol=1e-5, rtol=0, err_msg=k)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    # 9 pairs in batches of 4: the epoch's 3 steps include a batch of 1, which rank 1 sits out.
    return write_demo_pairs(tmp_path_factory.mktemp("data") / "pairs.jsonl", 9)


# --- splitting a global batch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n,size", [(4, 2), (5, 2), (1, 2), (7, 3)])
def test_the_ranks_shares_are_the_global_batch_in_order_and_their_weights_make_its_mean(n, size):
    items = list(range(n))
    shares = [Group(rank=r, size=size).share(items) for r in range(size)]
    assert sum(shares, []) == items
    assert len(shares[0]) == max(len(s) for s in shares)  # rank 0 holds a pair of every non-empty batch
    per_pair = mx.array([float(i * i) for i in items])
    weighted = sum(
        (
            Group(rank=r, size=size).weigh({"g": per_pair[mx.array(s)].mean()}, len(s), n)["g"]
            for r, s in enumerate(shares)
            if s
        ),
        mx.array(0.0),
    )
    assert abs(weighted.item() - per_pair.mean().item()) < 1e-5


# --- two ranks train what one rank trains -------------------------------------------------------------------


def test_two_ranks_train_what_one_rank_trains_and_a_run_resumes_on_another_number_of_ranks(tmp_path, tiny, pairs):
    one = api.train(pairs, model=str(tiny), adapter_path=tmp_path / "one", **SETTINGS)

    two = tmp_path / "two"
    home = tmp_path / "fresh-home"  # a cold reference cache: the reference pass is split between the ranks
    launched = subprocess.run(
        [
            MLX_LAUNCH,
            "-n",
            "2",
            "--backend",
            "ring",
            "--hosts",
            "127.0.0.1",
            "--starting-port",
            str(_free_ports(1)[0]),
            "--env",
            "OPENBLAS_NUM_THREADS=1",
            MLX_DPO,
            "train",
            "--model",
            str(tiny),
            "--data",
            str(pairs),
            "--adapter-path",
            str(two),
            *_flags(SETTINGS),
        ],
        capture_output=True,
        text=True,
        timeout=4 * HANG,
        env={**os.environ, "MLX_DPO_HOME": str(home)},
    )
    assert launched.returncode == 0, launched.stderr

    one_rows, two_rows = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in two_rows] == [1, 2, 3]  # one writer: each step once
    assert {r["ranks"] for r in one_rows} == {1} and {r["ranks"] for r in two_rows} == {2}
    for a, b in zip(one_rows, two_rows):
        for key in ("loss", "rewards/margins"):  # (accuracy at step 1 is a coin toss: policy == reference)
            assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)
        # A summed log-prob (~ -160) agrees to float32's rounding of sums taken in another order.
        assert b["logps/chosen"] == pytest.approx(a["logps/chosen"], rel=1e-6), a["step"]
    _assert_same_adapter(tmp_path / "one", two)
    assert "on 2 ranks" in launched.stderr  # the progress line
    assert len([line for line in launched.stdout.splitlines() if line.startswith("{")]) == 1  # rank 0 answers

    # Every reference value reached the cache, though each rank computed only its share of them.
    caches = list((home / "ref-cache").glob("*.sqlite"))
    assert len(caches) == 1
    assert sqlite3.connect(caches[0]).execute("SELECT count(*) FROM ref_logps").fetchone()[0] == 2 * 9

    # The two-rank run, stopped after its step-2 checkpoint, continues on one rank to the same adapter.
    (two / "metrics.jsonl").unlink()
    shutil.rmtree(two / "checkpoints" / "step-000003")
    assert checkpoint.latest(two).name == "step-000002"
    resumed = api.train(
        pairs,
        model=str(tiny),
        adapter_path=two,
        resume=True,  # the run's data options again
        max_length=SETTINGS["max_length"],
        max_prompt_length=SETTINGS["max_prompt_length"],
    )
    assert resumed.metrics["step"] == 3 and resumed.metrics["ranks"] == 1
    assert resumed.metrics["loss"] == pytest.approx(one.metrics["loss"], abs=1e-5)
    _assert_same_adapter(tmp_path / "one", two)


# --- a broken group -------------------------------------------------------------------------------------------


def test_a_killed_rank_stops_the_other_with_one_line_naming_it(tmp_path, tiny, pairs):
    argv = [
        "train",
        "--model",
        str(tiny),
        "--data",
        str(pairs),
        "--adapter-path",
        str(tmp_path / "run"),
        *_flags({**SETTINGS, "iters": 100_000, "save_every": 100_000}),
    ]
    rank0, rank1 = _start_ranks(tmp_path, [argv, argv])
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 2 * HANG
    try:
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):  # both ranks are training
            assert rank0.poll() is None and rank1.poll() is None, (
                rank0.stderr.read() if rank0.poll() else rank1.stderr.read()
            )
            assert time.monotonic() < deadline, "the two ranks never trained a step"
            time.sleep(0.1)
        rank1.send_signal(signal.SIGKILL)
        _, stderr = rank0.communicate(timeout=HANG)  # a hang fails here
    finally:
        for p in (rank0, rank1):
            if p.poll() is None:
                p.kill()
            p.wait()
    assert rank0.returncode == 2
    assert "rank 0 of 2: lost the connection to rank 1" in _error_line(stderr)


def test_ranks_with_different_settings_all_stop_naming_the_rank_that_differs(tmp_path, tiny, pairs):
    argv = [
        "train",
        "--model",
        str(tiny),
        "--data",
        str(pairs),
        "--adapter-path",
        str(tmp_path / "run"),
        *_flags(SETTINGS),
    ]
    ranks = _start_ranks(tmp_path, [argv + ["--beta", "0.1"], argv + ["--beta", "0.2"]])
    outputs = [p.communicate(timeout=HANG) for p in ranks]
    for p, (_, stderr) in zip(ranks, outputs):
        assert p.returncode == 2
        assert "rank 1's settings differ from rank 0's" in _error_line(stderr)
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_rank_whose_peers_never_connect_gives_up_with_one_line(tmp_path, tiny, pairs):
    argv = ["train", "--model", str(tiny), "--data", str(pairs), "--adapter-path", str(tmp_path / "run")]
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in _free_ports(2)]))
    # Rank 0 waits for a rank 1 that never starts: MLX's ring would wait for ever, the watchdog does not.
    alone = subprocess.run(
        [MLX_DPO, *argv],
        capture_output=True,
        text=True,
        timeout=HANG,
        env={**os.environ, "MLX_RANK": "0", "MLX_HOSTFILE": str(hostfile), "MLX_DPO_DIST_TIMEOUT": "3"},
    )
    assert alone.returncode == 2
    assert "rank 0: the other ranks did not connect within 3 s over ring" in _error_line(alone.stderr)
