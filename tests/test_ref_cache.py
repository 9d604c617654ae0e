"""The on-disk reference log-prob cache, and the reference pass that fills it.

An entry is found only for the same reference (weights, tokenizer and template, starting adapter,
numeric setup) and the exact same token ids. A damaged entry or file never yields a value: it is a
miss, recomputed and overwritten. With a warm cache the reference pass runs no forward pass at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import numpy as np
import pytest

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Status
from mlx_dpo.training import ref_cache
from mlx_dpo.training.batching import make_batch
from mlx_dpo.training.logprobs import sequence_logps
from mlx_dpo.training.ref_cache import RefCache, arrays_digest, entry_key, reference_fingerprint
from mlx_dpo.training.reference import reference_logps
from mlx_dpo.training.tokens import Encoder

PROMPT = (1, 9690, 198, 19556, 2, 198, 1, 520, 9531, 198)
CHOSEN = (19556, 665, 2)
REJECTED = (5230, 2)


@pytest.fixture
def cache(tmp_path):
    c = RefCache("fp-test", root=tmp_path)
    yield c
    c.close()


@contextlib.contextmanager
def raw_db(cache_or_path: RefCache | Path):
    """A second, plain connection (autocommit) to the cache file, to look at or tamper with what is stored."""
    db = sqlite3.connect(getattr(cache_or_path, "path", cache_or_path), isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def row_count(cache: RefCache) -> int:
    with raw_db(cache) as db:
        return db.execute("SELECT count(*) FROM ref_logps").fetchone()[0]


# --- store and lookup ------------------------------------------------------------------------------------------


def test_store_then_lookup_returns_the_values_and_counts_hits_and_misses(cache):
    assert cache.lookup([(PROMPT, CHOSEN), (PROMPT, REJECTED)]) == [None, None]
    assert (cache.hits, cache.misses) == (0, 2)

    cache.store([(PROMPT, CHOSEN, -3.25), (PROMPT, REJECTED, -7.5)])

    assert cache.lookup([(PROMPT, REJECTED), (PROMPT, CHOSEN), (PROMPT, (1, 2))]) == [-7.5, -3.25, None]
    assert (cache.hits, cache.misses, cache.damaged) == (2, 3, 0)


def test_stored_values_come_back_bit_for_bit_and_survive_reopening(tmp_path):
    values = [-1234.5678901234567, -1e-30, 0.0, -0.0, float(np.float32(-42.123))]
    items = [(PROMPT, (10 + i, 2)) for i in range(len(values))]
    with_values = [(p, c, v) for (p, c), v in zip(items, values)]
    first = RefCache("fp-test", root=tmp_path)
    first.store(with_values)
    first.close()

    again = RefCache("fp-test", root=tmp_path)
    assert again.lookup(items) == values  # -0.0 comes back as 0.0, which compares equal
    assert (again.hits, again.misses) == (len(values), 0)
    again.close()


def test_the_cache_lives_in_one_sqlite_file_per_fingerprint_under_mlx_dpo_home():
    c = RefCache("fp-home")
    try:
        assert c.path == Path(os.environ["MLX_DPO_HOME"]) / "ref-cache" / "fp-home.sqlite"
        assert c.path.is_file()
    finally:
        c.close()


def test_different_token_ids_miss(cache):
    cache.store([(PROMPT, CHOSEN, -3.25)])

    assert cache.lookup([(PROMPT[-6:], CHOSEN)]) == [None]  # the prompt truncated by max_prompt_length
    assert cache.lookup([(PROMPT, CHOSEN[:2])]) == [None]  # the completion truncated by max_length
    assert cache.lookup([(PROMPT + CHOSEN[:1], CHOSEN[1:])]) == [None]  # same ids, split elsewhere
    assert cache.lookup([(PROMPT, CHOSEN)]) == [-3.25]


def test_an_entry_of_another_fingerprint_in_the_same_folder_misses(tmp_path):
    a = RefCache("fp-a", root=tmp_path)
    a.store([(PROMPT, CHOSEN, -3.25)])
    b = RefCache("fp-b", root=tmp_path)

    assert b.lookup([(PROMPT, CHOSEN)]) == [None]
    assert entry_key("fp-a", PROMPT, CHOSEN) != entry_key("fp-b", PROMPT, CHOSEN)
    a.close()
    b.close()


# --- the reference fingerprint ---------------------------------------------------------------------------------


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """The files a fingerprint reads; their content does not need to be a working model."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name, content in {
        "model.safetensors": b"weights" * 100,
        "config.json": b'{"model_type": "llama"}',
        "tokenizer.json": b'{"model": "bpe"}',
        "tokenizer_config.json": b'{"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}',
    }.items():
        (folder / name).write_bytes(content)
    return folder


def fingerprint(folder: Path, adapter_digest: str | None = None, numeric: str = "float32-cpu") -> str:
    return reference_fingerprint(folder, adapter_digest=adapter_digest, numeric=numeric)


def replace_file(path: Path, content: bytes) -> None:
    """Write a new version of a file the way converters and mlx-dpo do: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def test_the_fingerprint_is_stable_and_follows_content_not_location(model_folder, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(model_folder, moved)

    assert fingerprint(model_folder) == fingerprint(model_folder) == fingerprint(moved)


@pytest.mark.parametrize(
    "change",
    [
        "weights file rewritten",
        "weights file rewritten in place",
        "another weights shard",
        "config",
        "tokenizer",
        "chat template in tokenizer_config.json",
        "chat_template.jinja added",
    ],
)
def test_a_changed_model_file_changes_the_fingerprint_so_the_cache_misses(model_folder, tmp_path, change):
    before = fingerprint(model_folder)
    cache = RefCache(before, root=tmp_path / "cache")
    cache.store([(PROMPT, CHOSEN, -3.25)])

    if change == "weights file rewritten":
        replace_file(model_folder / "model.safetensors", b"WEIGHTS" * 100)  # same size, new file
    elif change == "weights file rewritten in place":
        with open(model_folder / "model.safetensors", "r+b") as f:
            f.write(b"w" * 700 + b"!")  # one byte longer
    elif change == "another weights shard":
        (model_folder / "model-00002-of-00002.safetensors").write_bytes(b"more weights")
    elif change == "config":
        replace_file(model_folder / "config.json", b'{"model_type": "llama", "rope_theta": 1}')
    elif change == "tokenizer":
        replace_file(model_folder / "tokenizer.json", b'{"model": "unigram"}')
    elif change == "chat template in tokenizer_config.json":
        replace_file(model_folder / "tokenizer_config.json", b'{"chat_template": "{{ messages }}"}')
    elif change == "chat_template.jinja added":
        (model_folder / "chat_template.jinja").write_text("{{ messages }}")

    after = fingerprint(model_folder)
    assert after != before
    other = RefCache(after, root=tmp_path / "cache")
    assert other.lookup([(PROMPT, CHOSEN)]) == [None]
    other.close()
    cache.close()


def test_the_starting_adapter_and_the_numeric_setup_are_part_of_the_fingerprint(model_folder):
    adapter = {
        "layers.0.self_attn.q_proj.lora_a": mx.zeros((8, 4)),
        "layers.0.self_attn.q_proj.lora_b": mx.ones((4, 8)),
    }
    changed = {**adapter, "layers.0.self_attn.q_proj.lora_b": mx.full((4, 8), 1.5)}
    base = fingerprint(model_folder)

    assert arrays_digest(adapter) == arrays_digest(dict(reversed(list(adapter.items()))))  # order does not matter
    assert arrays_digest(adapter) != arrays_digest(changed)
    with_adapter = fingerprint(model_folder, adapter_digest=arrays_digest(adapter))
    assert len({base, with_adapter, fingerprint(model_folder, adapter_digest=arrays_digest(changed))}) == 3
    assert fingerprint(model_folder, numeric="bfloat16-gpu") != base
    assert fingerprint(model_folder, numeric="quantized-cpu") != base


# --- damage ----------------------------------------------------------------------------------------------------


def test_a_damaged_entry_is_a_miss_and_is_overwritten_by_the_next_store(cache):
    cache.store([(PROMPT, CHOSEN, -3.25), (PROMPT, REJECTED, -7.5)])
    with raw_db(cache) as db:  # a value changed behind the cache's back: its checksum no longer matches
        db.execute("UPDATE ref_logps SET logp = -1.0 WHERE key = ?", (entry_key(cache.fingerprint, PROMPT, CHOSEN),))

    assert cache.lookup([(PROMPT, CHOSEN), (PROMPT, REJECTED)]) == [None, -7.5]
    assert (cache.hits, cache.misses, cache.damaged) == (1, 1, 1)

    cache.store([(PROMPT, CHOSEN, -3.25)])  # recomputed
    assert cache.lookup([(PROMPT, CHOSEN)]) == [-3.25]
    assert row_count(cache) == 2


def test_an_entry_whose_token_count_was_changed_is_a_miss(cache):
    cache.store([(PROMPT, CHOSEN, -3.25)])
    with raw_db(cache) as db:
        db.execute("UPDATE ref_logps SET tokens = tokens + 1")

    assert cache.lookup([(PROMPT, CHOSEN)]) == [None]
    assert cache.damaged == 1


def test_a_file_overwritten_with_garbage_is_moved_aside_and_a_fresh_cache_works(tmp_path):
    first = RefCache("fp-test", root=tmp_path)
    first.store([(PROMPT, CHOSEN, -3.25)])
    first.close()
    garbage = os.urandom(8192)
    first.path.write_bytes(garbage)

    fresh = RefCache("fp-test", root=tmp_path)

    assert first.path.with_suffix(".damaged").read_bytes() == garbage  # kept for inspection
    assert fresh.lookup([(PROMPT, CHOSEN)]) == [None]
    fresh.store([(PROMPT, CHOSEN, -3.5)])
    assert fresh.lookup([(PROMPT, CHOSEN)]) == [-3.5]
    fresh.close()
    reopened = RefCache("fp-test", root=tmp_path)
    assert reopened.lookup([(PROMPT, CHOSEN)]) == [-3.5]
    reopened.close()


def test_a_file_cut_short_is_moved_aside_too(tmp_path):
    first = RefCache("fp-test", root=tmp_path)
    first.store([(PROMPT, (i, 2), -float(i)) for i in range(3, 2000)])
    first.close()
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])  # e.g. a disk that filled up

    fresh = RefCache("fp-test", root=tmp_path)
    assert first.path.with_suffix(".damaged").is_file()
    assert fresh.lookup([(PROMPT, (5, 2))]) == [None]
    fresh.close()


def test_damage_found_while_reading_moves_the_file_aside_and_reads_as_misses(tmp_path):
    first = RefCache("fp-test", root=tmp_path)
    items = [(PROMPT, (i, 2), -float(i)) for i in range(3, 500)]
    first.store(items)
    first.close()
    # Garble the table's root page only: the key index (what opening checks) stays intact, the rows do not.
    with raw_db(first.path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ref_logps'").fetchone()[0]
    with open(first.path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)

    cache = RefCache("fp-test", root=tmp_path)
    assert not first.path.with_suffix(".damaged").exists()  # opening did not notice

    assert cache.lookup([(p, c) for p, c, _ in items[:3]]) == [None, None, None]
    assert first.path.with_suffix(".damaged").is_file()
    cache.store(items[:1])
    assert cache.lookup([items[0][:2]]) == [items[0][2]]
    cache.close()


def test_a_busy_database_is_not_mistaken_for_a_damaged_one(tmp_path, monkeypatch):
    path = tmp_path / "fp-test.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute(
        "CREATE TABLE ref_logps (key TEXT PRIMARY KEY, logp REAL NOT NULL, tokens INTEGER NOT NULL, "
        "checksum TEXT NOT NULL)"
    )
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of writing
    monkeypatch.setattr(ref_cache, "BUSY_TIMEOUT", 0.05)

    with pytest.raises(MlxDpoError, match="database is locked: another mlx-dpo process is writing it"):
        RefCache("fp-test", root=tmp_path)
    assert path.is_file() and not path.with_suffix(".damaged").exists()
    holder.rollback()
    holder.close()


# --- transactions ----------------------------------------------------------------------------------------------


def test_a_store_is_all_or_nothing(cache):
    # Make the database fail on the third insert of a batch, as a full disk would mid-transaction.
    with raw_db(cache) as db:
        db.execute(
            "CREATE TRIGGER fail_third BEFORE INSERT ON ref_logps "
            "WHEN (SELECT count(*) FROM ref_logps) >= 2 BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    items = [(PROMPT, (i, 2), -float(i)) for i in range(3, 6)]

    with pytest.raises(sqlite3.DatabaseError, match="disk full"):
        cache.store(items)

    assert row_count(cache) == 0  # the two inserts before the failure were rolled back too
    with raw_db(cache) as db:
        db.execute("DROP TRIGGER fail_third")
    cache.store(items)
    assert cache.lookup([(p, c) for p, c, _ in items]) == [-3.0, -4.0, -5.0]


def test_a_non_finite_value_is_refused_before_anything_is_written(cache):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="not finite"):
            cache.store([(PROMPT, CHOSEN, -3.25), (PROMPT, REJECTED, bad)])
        assert row_count(cache) == 0


# --- the reference pass ----------------------------------------------------------------------------------------


class Untouchable:
    """Stands in for the model where none may be used: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name}) although every value was cached")


@pytest.fixture(scope="module")
def encoded_pairs(default_tokenizer):
    questions = ["Name a colour.", "What is 2+2?", "Say hi.", "Spell cat."]
    pairs = [
        PreferencePair(f"q{i}", [{"role": "user", "content": q}], f"Answer {i}: yes.", "No." * (i + 1))
        for i, q in enumerate(questions)
    ]
    return Encoder(default_tokenizer).encode_all(pairs)[0]


def test_the_reference_pass_computes_misses_stores_them_and_then_runs_no_forward_pass(
    tiny_weights, encoded_pairs, tmp_path
):
    cold_cache = RefCache("fp-ref", root=tmp_path)
    events = []
    ref, stats = reference_logps(tiny_weights, encoded_pairs, cold_cache, batch_size=3, on_event=events.append)
    cold_cache.close()

    n = len(encoded_pairs)
    assert (stats.hits, stats.misses) == (0, 2 * n) and stats.seconds > 0
    assert [e.done for e in events if isinstance(e, Status) and e.message == "reference pass"] == [
        3,
        4,
    ]  # batches of 3 pairs
    direct = sequence_logps(
        tiny_weights, make_batch([(p.prompt, c) for p in encoded_pairs for c in (p.chosen, p.rejected)])
    )
    np.testing.assert_allclose(np.array([v for p in encoded_pairs for v in ref.values[p]]), np.array(direct), atol=1e-4)

    warm_cache = RefCache("fp-ref", root=tmp_path)
    again, warm = reference_logps(Untouchable(), encoded_pairs, warm_cache)

    assert again.values == ref.values  # exactly the stored values
    assert (warm.hits, warm.misses, warm.seconds) == (2 * n, 0, 0)
    warm_cache.close()


def test_the_reference_pass_computes_only_the_misses(tiny_weights, encoded_pairs, cache):
    # Pretend the chosen completions were cached with values no model would give.
    cache.store([(p.prompt, p.chosen, -1000.0 - i) for i, p in enumerate(encoded_pairs)])

    ref, stats = reference_logps(tiny_weights, encoded_pairs, cache)

    assert (stats.hits, stats.misses) == (len(encoded_pairs), len(encoded_pairs))
    for i, p in enumerate(encoded_pairs):
        chosen, rejected = ref.values[p]
        assert chosen == -1000.0 - i  # taken from the cache, not recomputed
        assert -1000.0 < rejected < 0.0  # computed
    assert cache.lookup([(p.prompt, p.rejected) for p in encoded_pairs]) == [ref.values[p][1] for p in encoded_pairs]


def test_the_reference_pass_runs_in_eval_mode_and_restores_the_training_mode(tiny_weights, encoded_pairs, cache):
    seen = []

    class Recording:  # notes the mode the model is in when it runs
        def __init__(self, model):
            self.inner = model

        def __getattr__(self, name):
            return getattr(self.__dict__["inner"], name)

        def __call__(self, *args, **kwargs):
            seen.append(self.inner.training)
            return self.inner(*args, **kwargs)

    tiny_weights.train()
    reference_logps(Recording(tiny_weights), encoded_pairs[:1], cache, shared_prompt=False, full_logits=True)

    assert seen == [False]
    assert tiny_weights.training


def test_a_failing_reference_pass_still_restores_the_training_mode(tiny_weights, encoded_pairs, cache):
    class Failing:
        def __init__(self, model):
            self.inner = model

        def __getattr__(self, name):
            return getattr(self.__dict__["inner"], name)

        def __call__(self, *args, **kwargs):
            raise MemoryError("out of memory")

    tiny_weights.train()
    with pytest.raises(MemoryError):
        reference_logps(Failing(tiny_weights), encoded_pairs, cache, shared_prompt=False, full_logits=True)

    assert tiny_weights.training
    assert cache.lookup([(p.prompt, p.chosen) for p in encoded_pairs]) == [None] * len(encoded_pairs)
