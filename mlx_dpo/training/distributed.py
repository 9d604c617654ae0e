"""Data-parallel training over MLX's own engine, `mx.distributed`: several processes (ranks) train one adapter.

`mlx.launch` starts the same `mlx-dpo train` command on every rank (ring over TCP, JACCL over
Thunderbolt, MPI, or NCCL on CUDA GPUs). The design keeps a run independent of the number of ranks:

- every rank walks the same global batches in the same order (the data order is a function of the
  seed alone) and takes its own contiguous share of each one (`Group.share`);
- each rank's gradient is weighted by its share of the global batch (`Group.weigh`) and the weighted
  gradients are summed (`Group.sum_gradients`): the result is the one-rank mean gradient over the
  whole batch, so every rank applies the same update and holds the same adapter after every step;
- metric sums and counts are summed before a report (`Group.sum_metrics`); rank 0 alone writes
  (`Group.is_writer`): adapter, checkpoints, metrics, progress;
- the reference pass merges every rank's cache hits (`Group.merge`), splits the misses, gathers
  the results, and one rank per cache folder writes them (`Group.writes_cache`).

A one-rank group does no communication at all. The collectives run on the CPU stream (as the ring
backend needs on Metal) outside the compiled step.

A broken group must not hang: MLX's ring raises when a peer's socket closes (a killed rank), which
becomes one line naming the rank; but it waits for ever on a peer that never connects or stops
answering, so every collective runs under a watchdog that ends the process with one line and
exit status 2 after `MLX_DPO_DIST_TIMEOUT` seconds (default 600).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from mlx_dpo.errors import MlxDpoError

TIMEOUT_ENV = "MLX_DPO_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for the others in one collective: longer than a slow step
T = TypeVar("T")


def backend_from_env() -> str | None:
    """The backend `mlx.launch` (or mpirun) set this process up for, or None outside a launcher."""
    env = os.environ
    if "MLX_JACCL_COORDINATOR" in env or "MLX_IBV_DEVICES" in env:
        return "jaccl"
    if "NCCL_HOST_IP" in env and "MLX_WORLD_SIZE" in env:
        return "nccl"
    if "MLX_HOSTFILE" in env and "MLX_RANK" in env:
        return "ring"
    if "OMPI_COMM_WORLD_SIZE" in env or "PMI_SIZE" in env:
        return "mpi"
    return None


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise MlxDpoError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds above 0")
    return value


def _give_up(message: str) -> None:
    """The watchdog's end: the main thread is blocked inside MLX, so this thread ends the process."""
    sys.stderr.write(f"mlx-dpo: error: {message}\n")
    sys.stderr.flush()
    os._exit(2)  # every file a rank writes is written atomically, so nothing is left half-written


@contextmanager
def watchdog(message: str, seconds: float) -> Iterator[None]:
    """Run a block that waits on other ranks; after `seconds` without it finishing, print `message` and exit 2."""
    timer = threading.Timer(seconds, _give_up, args=(message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# The watchdog of a call that holds the GIL: a child that waits on a pipe, and on timeout prints the line and
# interrupts the parent, whose SIGINT then goes straight to C's _exit(2) (Python code cannot run meanwhile).
_WATCH = (
    "import os, select, signal, sys\n"
    "if not select.select([sys.stdin], [], [], float(sys.argv[2]))[0]:\n"
    "    sys.stderr.write(sys.argv[3] + '\\n'); sys.stderr.flush(); os.kill(int(sys.argv[1]), signal.SIGINT)\n"
)


@contextmanager
def native_watchdog(message: str, seconds: float) -> Iterator[None]:
    """`watchdog` for a call that keeps Python's lock (mx.distributed.init): no Python thread can run during it."""
    libc = ctypes.CDLL(None)
    libc.signal.restype, libc.signal.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p]
    previous = libc.signal(signal.SIGINT, ctypes.cast(libc._exit, ctypes.c_void_p))  # exit status 2 = SIGINT's number
    child = subprocess.Popen(
        [sys.executable, "-I", "-c", _WATCH, str(os.getpid()), str(seconds), f"mlx-dpo: error: {message}"],
        stdin=subprocess.PIPE,
    )
    try:
        yield
    finally:
        child.stdin.close()  # the child sees the pipe close and leaves quietly
        child.wait()
        libc.signal(signal.SIGINT, previous)


def _digest_ints(text: str) -> list[int]:
    """A text's sha256 as two non-negative int32s: what the collectives compare."""
    h = hashlib.sha256(text.encode()).hexdigest()
    return [int(h[:7], 16), int(h[7:14], 16)]


@dataclass(frozen=True)
class Group:
    """This process's place in the group: its rank among `size` ranks over `backend` ("none" alone)."""

    rank: int = 0
    size: int = 1
    backend: str = "none"
    handle: Any = None  # the mx.distributed.Group; None for a process on its own

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the adapter, checkpoints, metrics and progress."""
        return self.rank == 0

    def describe(self) -> dict:
        return {"backend": self.backend, "rank": self.rank, "size": self.size}

    # --- splitting the work ------------------------------------------------------------------------------------

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's slice of `n` items: contiguous, the first `n % size` ranks one item more (rank 0 first)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def share(self, items: Sequence[T]) -> list[T]:
        start, end = self.bounds(len(items))
        return list(items[start:end])

    def weigh(self, grads: dict, share: int, total: int) -> dict:
        """A share's mean gradient weighted by its part of the global batch: the weighted sum is the global mean."""
        if share == total:
            return grads
        return tree_map(lambda g: g * (share / total), grads)

    # --- collectives -------------------------------------------------------------------------------------------

    def _peers(self) -> str:
        if self.size == 2:
            return f"rank {1 - self.rank}"
        if self.backend == "ring":  # a ring rank talks to its two neighbours
            return f"rank {(self.rank - 1) % self.size} or rank {(self.rank + 1) % self.size}"
        return "another rank"

    def _run(self, what: str, compute: Callable[[], T]) -> T:
        """Evaluate one collective under the watchdog; a lost peer becomes one line naming the rank."""
        with watchdog(
            f"rank {self.rank} of {self.size}: no answer from {self._peers()} for "
            f"{timeout_seconds():g} s while {what}; that rank is stuck or its host is unreachable "
            f"(set {TIMEOUT_ENV} for a longer wait)",
            timeout_seconds(),
        ):
            try:
                out = compute()
                mx.eval(out)
            except RuntimeError as e:
                raise MlxDpoError(
                    f"rank {self.rank} of {self.size}: lost the connection to {self._peers()} while {what} ({e}); "
                    "that rank stopped (see its own error) or its host became unreachable; start all ranks again "
                    "(--resume continues from the last checkpoint)"
                ) from None
        return out

    def all_sum(self, x: mx.array, what: str) -> mx.array:
        if self.size == 1:
            return x
        return self._run(what, lambda: mx.distributed.all_sum(x, group=self.handle, stream=mx.cpu))

    def all_gather(self, x: mx.array, what: str) -> mx.array:
        """Every rank's `x` stacked along a new first axis, rank order."""
        if self.size == 1:
            return x[None]
        out = self._run(what, lambda: mx.distributed.all_gather(x[None], group=self.handle, stream=mx.cpu))
        return out

    def broadcast_text(self, text: str, what: str) -> str:
        """Rank 0's `text` on every rank (the others' argument is ignored)."""
        if self.size == 1:
            return text
        data = (
            np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int32) if self.is_writer else np.zeros(0, np.int32)
        )
        length = int(self.all_sum(mx.array([len(data)], dtype=mx.int32), what).item())
        buf = np.zeros(length, np.int32)
        buf[: len(data)] = data
        summed = np.array(self.all_sum(mx.array(buf), what))
        return summed.astype(np.uint8).tobytes().decode()

    def sum_gradients(self, grads: dict | None, params: dict) -> dict:
        """The sum over ranks of each rank's weighted gradients (zeros from a rank that had no pairs)."""
        if self.size == 1:
            return grads
        if grads is None:
            grads = tree_map(mx.zeros_like, params)
        mx.eval(grads)  # the local work first: the watchdog then times only the wait for the other ranks
        flat = tree_flatten(grads)
        # One collective for the whole adapter: a LoRA adapter is small, a message per matrix costs more.
        vector = mx.concatenate([g.astype(mx.float32).reshape(-1) for _, g in flat])
        summed = self.all_sum(vector, "summing gradients")
        out, offset = [], 0
        for name, g in flat:
            out.append((name, summed[offset : offset + g.size].reshape(g.shape).astype(g.dtype)))
            offset += g.size
        return tree_unflatten(out)

    def sum_metrics(self, sums: dict[str, mx.array], counts: list[int]) -> tuple[dict[str, mx.array], list[int]]:
        """Metric sums and counts over all ranks. Rank 0 names the metrics: a rank without pairs has none."""
        if self.size == 1:
            return sums, counts
        names = json.loads(self.broadcast_text(json.dumps(sorted(sums)), "naming the metrics"))
        local = [sums[k].astype(mx.float32).reshape(()) if k in sums else mx.array(0.0) for k in names]
        vector = mx.concatenate([mx.stack(local) if local else mx.zeros((0,)), mx.array(counts, dtype=mx.float32)])
        total = self.all_sum(vector, "summing metrics").tolist()
        return dict(zip(names, (mx.array(v) for v in total[: len(names)]))), [
            int(round(c)) for c in total[len(names) :]
        ]

    def merge(self, values: list[float | None], what: str) -> list[float | None]:
        """For each item, the value of the lowest rank that has one (None where no rank has)."""
        if self.size == 1 or not values:
            return values
        local = mx.array([math.nan if v is None else v for v in values], dtype=mx.float32)
        every = np.array(self.all_gather(local, what))
        out: list[float | None] = []
        for column in every.T:
            found = column[~np.isnan(column)]
            out.append(float(found[0]) if len(found) else None)
        return out

    def writes_cache(self, folder: str) -> bool:
        """Whether this rank writes its disk cache: the lowest rank of each machine's cache folder does."""
        if self.size == 1:
            return True
        key = _digest_ints(f"{socket.gethostname()}|{os.path.realpath(folder)}")
        every = np.array(self.all_gather(mx.array(key, dtype=mx.int32), "comparing cache folders"))
        return not any((every[r] == every[self.rank]).all() for r in range(self.rank))

    def check_same(self, **digests: str) -> None:
        """Stop every rank, naming the ranks that differ from rank 0, when `digests` (settings, data...) differ."""
        if self.size == 1:
            return
        names = sorted(digests)
        mine = [i for name in names for i in _digest_ints(digests[name])]
        every = np.array(self.all_gather(mx.array(mine, dtype=mx.int32), "comparing settings and data"))
        problems = []
        for r in range(1, self.size):
            differ = [
                n for i, n in enumerate(names) if (every[r, 2 * i : 2 * i + 2] != every[0, 2 * i : 2 * i + 2]).any()
            ]
            if differ:
                problems.append(f"rank {r}'s {' and '.join(differ)}")
        if problems:
            raise MlxDpoError(
                f"{', '.join(problems)} differ from rank 0's; every rank must run the same command "
                "on the same data and model (same files on every machine)"
            )


_GROUP: Group | None = None


def group() -> Group:
    """The process's group, joined once: the launcher's backend when started by `mlx.launch`, else alone."""
    global _GROUP
    if _GROUP is None:
        _GROUP = _join(backend_from_env())
    return _GROUP


def _join(backend: str | None) -> Group:
    if backend is None:
        return Group()
    if backend == "ring" and not _hostfile_names_peers():
        return Group()  # `mlx.launch` on a single host and rank: nothing to join
    rank = os.environ.get("MLX_RANK", "?")
    seconds = timeout_seconds()
    with native_watchdog(
        f"rank {rank}: the other ranks did not connect within {seconds:g} s over {backend}; check that "
        f"every host runs the command and can reach the others (set {TIMEOUT_ENV} for a longer wait)",
        seconds,
    ):
        try:
            handle = mx.distributed.init(strict=True, backend=backend)
        except RuntimeError as e:
            raise MlxDpoError(
                f"rank {rank}: cannot join the {backend} group ({e}); check the hosts and that every "
                "host runs the same command"
            ) from None
    return Group(handle.rank(), handle.size(), backend, handle)


def _hostfile_names_peers() -> bool:
    try:
        with open(os.environ["MLX_HOSTFILE"], encoding="utf-8") as f:
            return bool(f.read().strip())
    except OSError:
        return True  # let MLX report the unreadable file
