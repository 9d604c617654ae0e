"""A write that fails half-way leaves the old file intact and says so in one line: a full disk, for every
kind of file mlx-dpo writes (JSON, safetensors, checkpoints, the reference cache, exports, the store).

Each test runs on a small file system that really fills up: a tmpfs mounted for the test where the machine
allows it (root), and otherwise (CI as an ordinary user) on a per-process file-size limit (RLIMIT_FSIZE),
which makes the kernel refuse every write past a few bytes, for Python, MLX and SQLite alike. The first is
ENOSPC, the second EFBIG: the same half-written file for the code under test.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import pytest
from helpers import make_adapter, write_jsonl

from mlx_dpo.atomic import WriteFailed, write_json
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.adapter import save_arrays
from mlx_dpo.training import checkpoint
from mlx_dpo.training.ref_cache import RefCache

TINY_SEED = 41
FILE_SIZE_LIMIT = 1024  # bytes: in the fallback, any file written past this fails


class SmallDisk:
    """`folder` on a file system that `full()` fills: inside that block, writes under `folder` fail."""

    def __init__(self, folder: Path, mode: str):
        self.folder, self.mode = folder, mode

    @contextmanager
    def full(self) -> Iterator[None]:
        if self.mode == "tmpfs":
            filler = self.folder / ".filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):  # until the file system is full to the last page
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
            try:
                yield
            finally:
                filler.unlink()
        else:
            old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
            old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel's default ends the process
            resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, old_limit[1]))
            try:
                yield
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
                signal.signal(signal.SIGXFSZ, old_handler)


def _mount_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.fixture(params=["tmpfs", "file-size limit"])
def disk(request, tmp_path) -> Iterator[SmallDisk]:
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "tmpfs":
        if not _mount_tmpfs(folder):
            pytest.skip("cannot mount a small tmpfs here (needs root); the file-size-limit variant runs instead")
        try:
            yield SmallDisk(folder, "tmpfs")
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        yield SmallDisk(folder, "file-size limit")


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (the tmpfs filler aside) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".filler"
    }


def _assert_one_line(e: BaseException, *fragments: str) -> None:
    message = str(e)
    assert "\n" not in message and message, message
    for fragment in fragments:
        assert fragment in message, message


def test_a_json_file_rewritten_on_a_full_disk_keeps_its_old_content(disk):
    target = disk.folder / "settings.json"
    write_json(target, {"old": True})
    before = _files(disk.folder)
    with disk.full(), pytest.raises(WriteFailed) as failed:
        write_json(target, {"new": "x" * 100_000})
    _assert_one_line(failed.value, str(target), "cannot write", "the old one is left as it was")
    if disk.mode == "tmpfs":
        assert "No space left on device" in str(failed.value)
    assert _files(disk.folder) == before  # the old file, and no temporary one left behind


def test_a_safetensors_file_written_by_mlx_on_a_full_disk_keeps_the_old_one(disk):
    target = disk.folder / "adapters.safetensors"
    save_arrays(target, {"w": mx.ones((8,))})
    before = _files(disk.folder)
    with disk.full(), pytest.raises(WriteFailed) as failed:
        save_arrays(target, {"w": mx.zeros((100_000,))})
    _assert_one_line(failed.value, str(target), "cannot write")
    if disk.mode == "tmpfs":  # MLX gives no errno; the free space says what happened
        assert "No space left on device" in str(failed.value)
    assert _files(disk.folder) == before


def test_a_checkpoint_that_does_not_fit_leaves_the_last_one_and_the_adapter_as_they_were(disk):
    adapter_dir = disk.folder / "adapter"
    model = nn.Linear(64, 64)
    optimizer = optim.AdamW(learning_rate=1e-3)
    optimizer.update(model, {"weight": mx.ones((64, 64)), "bias": mx.ones((64,))})
    checkpoint.save(adapter_dir, 1, model, optimizer, {"note": "step 1"}, {})
    before = _files(disk.folder)
    with disk.full(), pytest.raises(MlxDpoError) as failed:
        checkpoint.save(adapter_dir, 2, model, optimizer, {"note": "step 2"}, {})
    _assert_one_line(failed.value, str(adapter_dir / "checkpoints" / "step-000002"), "cannot write")
    assert checkpoint.latest(adapter_dir) == adapter_dir / "checkpoints" / "step-000001"
    assert _files(disk.folder) == before  # no half checkpoint, no temporary folder, the top adapter untouched


def test_reference_cache_entries_that_do_not_fit_are_one_line_and_the_stored_ones_stay(disk):
    cache = RefCache("full-disk-test", root=disk.folder)
    cache.store([((1, 2), (3,), -1.5)])
    with disk.full(), pytest.raises(MlxDpoError) as failed:
        cache.store([((1, 2), tuple(range(i, i + 50)), -2.0) for i in range(2000)])
    _assert_one_line(failed.value, f"reference cache {cache.path}", "stored before are kept")
    if disk.mode == "tmpfs":
        assert "the disk is full" in str(failed.value)
    cache.close()
    again = RefCache("full-disk-test", root=disk.folder)
    assert again.lookup([((1, 2), (3,)), ((1, 2), tuple(range(0, 50)))]) == [-1.5, None]  # rolled back whole
    again.close()


def test_a_pair_saved_on_a_full_disk_is_one_line_and_the_store_keeps_everything_before(disk):
    workspace = disk.folder / "workspace"
    with PreferenceStore(workspace) as store:
        for i in range(3):
            store.add_pair(f"Question {i}?", "Good.", "Bad.")
        with disk.full(), pytest.raises(MlxDpoError) as failed:
            store.add_pair("A long one?", "x" * 200_000, "Bad.")
        _assert_one_line(failed.value, str(store.path), "the change was not saved")
        assert store.count_pairs() == 3
        store.add_pair("Room again?", "Yes.", "No.")  # the store works again once there is room
    with PreferenceStore(workspace) as store:
        assert store.count_pairs() == 4 and store.integrity_check() == "ok"


def test_data_import_onto_a_full_disk_exits_2_with_one_line_and_imports_nothing(disk, tmp_path, capsys):
    from mlx_dpo.cli import main

    rows = write_jsonl(
        tmp_path / "pairs.jsonl",
        *({"prompt": f"Imported {i}?", "chosen": "Yes.", "rejected": "No."} for i in range(20)),
    )
    workspace = disk.folder / "workspace"
    with PreferenceStore(workspace) as store:
        store.add_pair("Labelled before?", "Good.", "Bad.")
    with disk.full():
        code = main(["data", "import", str(rows), "--workspace", str(workspace)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"mlx-dpo: error: {workspace / 'preferences.sqlite'}:")
    with PreferenceStore(workspace) as store:
        assert store.count_pairs() == 1


def test_an_export_that_does_not_fit_leaves_the_previous_export_whole(disk, tiny, tmp_path):
    from mlx_dpo.export.peft import export_peft

    adapter = make_adapter(str(tiny), tmp_path / "adapter")
    out = disk.folder / "peft"
    export_peft(adapter, out, model=str(tiny))
    before = _files(disk.folder)
    with disk.full(), pytest.raises(MlxDpoError) as failed:
        export_peft(adapter, out, model=str(tiny), overwrite=True)
    _assert_one_line(failed.value, str(out), "cannot write")
    assert _files(disk.folder) == before
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
