"""A round's version number: claimed by one process at a time, and a round whose process died recorded as such.

A round trains into `<workspace>/adapters/v<N>` and the store records it when it ends (rounds.py). Two rules keep
the folders and the store in agreement when processes die, or run rounds side by side:
- claiming: under a lock for the whole workspace (`adapters/.claim.lock`), a round takes the next free number
  by making its folder, and locks `v<N>/.round.lock` for as long as its process runs it;
- recovering: a folder that has no record and whose lock is free belongs to a round whose process died (SIGKILL,
  a crash, power lost) before recording it. The next claim records it as a failed round (INTERRUPTED): its
  checkpoints stay for inspection, its pairs stay untrained (the next round trains them), and its number is not
  used again.
The locks are fcntl.flock locks, which the system releases when their process ends, however it ends.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError

CLAIM_LOCK = ".claim.lock"
ROUND_LOCK = ".round.lock"
INTERRUPTED = "interrupted: its process ended before the round did (killed or crashed); its pairs stay untrained"


@dataclass
class Claim:
    """Round `version`'s folder, locked until `release()` or the end of this process."""

    version: int
    folder: Path
    lock: IO[str]

    def release(self) -> None:
        self.lock.close()

    def abandon(self) -> None:
        """No round after all (nothing to train): the folder goes, and its number is free again."""
        (self.folder / ROUND_LOCK).unlink(missing_ok=True)
        self.release()
        self.folder.rmdir()

    @contextmanager
    def given_up_on_error(self) -> Iterator[None]:
        """The claim abandoned if the block raises (a round that cannot start leaves no folder)."""
        try:
            yield
        except BaseException:
            self.abandon()
            raise


def claim_version(store: PreferenceStore, root: Path, next_free: Callable[[], int]) -> Claim:
    """The next version number free in `root` (at least `next_free()`), its folder made and locked; first,
    the rounds that died unrecorded are recorded as failed."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MlxDpoError(f"{root}: cannot create the adapters folder ({e.strerror or e})") from None
    with _held(root / CLAIM_LOCK):
        record_interrupted(store, root)
        version = next_free()
        while True:
            folder = root / f"v{version}"
            try:
                folder.mkdir()
            except FileExistsError:  # made by a round of another process since next_free() looked
                version += 1
                continue
            lock = _try_lock(folder / ROUND_LOCK)
            assert lock is not None  # a folder just made: nobody else knows it yet
            return Claim(version, folder, lock)


def record_interrupted(store: PreferenceStore, root: Path) -> list[int]:
    """Record as failed each round folder of `root` without a record whose process has ended; their versions."""
    found, recorded = [], {r.version for r in store.list_rounds()}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not (folder.name[:1] == "v" and folder.name[1:].isdigit() and folder.is_dir()):
            continue
        version = int(folder.name[1:])
        if version in recorded:
            continue
        lock = _try_lock(folder / ROUND_LOCK)
        if lock is None:  # its process is training it now
            continue
        try:
            if not _recorded(store, version):  # its process may have recorded it and ended meanwhile
                store.record_round(version, folder, {}, {"error": INTERRUPTED}, "failed", [])
                found.append(version)
        finally:
            lock.close()
    return found


def _recorded(store: PreferenceStore, version: int) -> bool:
    return any(r.version == version for r in store.list_rounds())


def _try_lock(path: Path) -> IO[str] | None:
    """`path` opened and locked by this process, or None if another process holds its lock."""
    f = open(path, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """`path`'s lock, waited for: claims are short, so another process's is over in a moment."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
