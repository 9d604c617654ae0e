"""Bad bytes, not just bad rows: every reader of a user's file, fed random bytes and random near-valid JSON
(hypothesis), gives rows or a named error (MlxDpoError naming the file, and the line and field of a bad row),
never a traceback.

    pairs        mlx_dpo.data.pairs.load_pairs          (train --data/--valid-data, eval, data import): JSON Lines,
                 gzipped JSON Lines and Parquet files
    KTO rows     mlx_dpo.data.feedback.load_feedback    (train/eval --loss kto)
    prompt files mlx_dpo.data.prompt_file.read_prompt_file  (online --prompts/--eval-prompts, the app's queue)
    config files the --config reader of train, with its settings' checks (TOML and YAML)

Near-valid JSON is a valid row with fields dropped, retyped (any JSON value), cut short, nested deeply, or holding
escaped lone surrogates ("\\ud800": valid JSON, not text), or such rows written as Parquet. Each of the 9
properties runs EXAMPLES (60) cases, derandomized so that the suite sees the same 540 cases every run.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlx_dpo.cli import build_parser
from mlx_dpo.cli.common import train_settings
from mlx_dpo.cli.train import COMMAND_KEYS, _options
from mlx_dpo.data.feedback import load_feedback
from mlx_dpo.data.pairs import load_pairs
from mlx_dpo.data.prompt_file import read_prompt_file
from mlx_dpo.errors import MlxDpoError

# MLX_DPO_FUZZ_EXAMPLES=5000 explores further, with fresh random cases each run (not for `make test`).
EXAMPLES = int(os.environ.get("MLX_DPO_FUZZ_EXAMPLES", 60))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize="MLX_DPO_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies --------------------------------------------------------------------------------------------

TEXT = st.text(max_size=12) | st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028", " ", "\ufeff"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "tool"]) | JSON_VALUES,
        "content": TEXT | JSON_VALUES,
    },
)


def near(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A field's value: valid, or any JSON value in its place."""
    return st.one_of(valid, JSON_VALUES)


PROMPT = near(TEXT | st.lists(MESSAGE, max_size=3))
ANSWER = near(TEXT | st.lists(MESSAGE, max_size=2))
PAIR_ROW = st.fixed_dictionaries(
    {}, optional={"prompt": PROMPT, "chosen": ANSWER, "rejected": ANSWER, "id": near(TEXT | st.integers())}
)
KTO_ROW = (
    st.fixed_dictionaries(
        {},
        optional={
            "prompt": PROMPT,
            "completion": ANSWER,
            "label": near(st.booleans()),
            "id": near(TEXT | st.integers()),
        },
    )
    | PAIR_ROW
)
PROMPT_ROW = st.fixed_dictionaries({}, optional={"prompt": PROMPT, "messages": near(st.lists(MESSAGE, max_size=3))})
VALID_PAIR = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}


@st.composite
def lines_of(draw, rows: st.SearchStrategy) -> bytes:
    """A JSONL file of rows, some lines cut short, some nested deeply, some bytes not UTF-8 at all."""
    lines = []
    for row in draw(st.lists(rows | st.just(VALID_PAIR), min_size=1, max_size=4)):
        line = json.dumps(row)  # ensure_ascii: a lone surrogate is written as its \\u escape, which is valid JSON
        how = draw(st.sampled_from(["whole", "whole", "whole", "cut", "deep", "blank"]))
        if how == "cut":
            line = line[: draw(st.integers(0, len(line)))]
        elif how == "deep":
            depth = draw(st.sampled_from([50, 5000]))
            inner = "[" * depth + '"x"' + "]" * depth
            line = inner if draw(st.booleans()) else '{"prompt": ' + inner + "}"
        elif how == "blank":
            line = draw(st.sampled_from(["", "   ", "\r"]))
        lines.append(line.encode("utf-8", "surrogatepass"))
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + ending.join(lines) + draw(st.sampled_from([b"", ending]))


ANY_BYTES = st.binary(max_size=200)


# Every example's file lives under one folder that goes with the process: thousands of examples per run.
FILES = tempfile.TemporaryDirectory(prefix="fuzz-")


def written(content: bytes, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp(dir=FILES.name))
    path = folder / f"user-file{suffix}"
    path.write_bytes(content)
    return path


def named_error(path: Path, error: MlxDpoError) -> None:
    """A user error names the file first, and a bad row by its line (a Parquet file's: its row) and field."""
    message = str(error)
    assert message.startswith(str(path)), message
    for row in re.findall(rf"^  {re.escape(str(path))}(.*)$", message, re.M):  # the listed rows of a bad file
        assert re.match(r"(:\d+| row \d+): ", row), message


# --- the readers ---------------------------------------------------------------------------------------------


def read_pairs(content: bytes, suffix: str = ".jsonl") -> None:
    path = written(gzip.compress(content) if suffix == ".jsonl.gz" else content, suffix)
    for skip in (False, True):
        try:
            result = load_pairs(path, skip_invalid=skip)
        except MlxDpoError as e:
            named_error(path, e)
        else:
            assert result.pairs and all(isinstance(p.chosen, str) and p.chosen.strip() for p in result.pairs)
            for p in result.pairs:
                (p.prompt[-1]["content"] + p.chosen + p.rejected).encode("utf-8")  # text a store and a tokenizer take


def read_feedback(content: bytes) -> None:
    path = written(content, ".jsonl")
    for skip in (False, True):
        try:
            examples, _ = load_feedback(path, skip_invalid=skip)
        except MlxDpoError as e:
            named_error(path, e)
        else:
            assert examples and all(isinstance(x.desirable, bool) for x in examples)
            for x in examples:
                (x.prompt[-1]["content"] + x.completion).encode("utf-8")


def read_prompts(content: bytes, suffix: str) -> None:
    path = written(content, suffix)
    try:
        prompts = read_prompt_file(path)
    except MlxDpoError as e:
        named_error(path, e)
    else:
        assert prompts and all(p[-1]["role"] == "user" for p in prompts)
        for p in prompts:
            "".join(m["content"] for m in p).encode("utf-8")


def read_config(content: bytes, suffix: str) -> None:
    path = written(content, suffix)
    args = build_parser()[0].parse_args(["train", "--config", str(path)])
    try:
        _options(args, train_settings(incremental=False), COMMAND_KEYS)
    except MlxDpoError as e:
        named_error(path, e)


# --- random bytes --------------------------------------------------------------------------------------------


@FUZZ
@given(ANY_BYTES, st.sampled_from([".jsonl", ".parquet", ".jsonl.gz"]))
def test_random_bytes_as_pairs_give_pairs_or_a_named_error(content, suffix):
    read_pairs(content, suffix)


@FUZZ
@given(ANY_BYTES)
def test_random_bytes_as_kto_rows_give_rows_or_a_named_error(content):
    read_feedback(content)


@FUZZ
@given(ANY_BYTES, st.sampled_from([".txt", ".jsonl"]))
def test_random_bytes_as_a_prompt_file_give_prompts_or_a_named_error(content, suffix):
    read_prompts(content, suffix)


@FUZZ
@given(ANY_BYTES, st.sampled_from([".toml", ".yaml"]))
def test_random_bytes_as_a_config_file_give_settings_or_a_named_error(content, suffix):
    read_config(content, suffix)


# --- near-valid JSON, TOML and YAML --------------------------------------------------------------------------


@FUZZ
@given(lines_of(PAIR_ROW), st.sampled_from([".jsonl", ".jsonl.gz"]))
def test_near_valid_pair_rows_give_pairs_or_errors_naming_line_and_field(content, suffix):
    read_pairs(content, suffix)


@FUZZ
@given(st.lists(PAIR_ROW | st.just(VALID_PAIR), min_size=1, max_size=4))
def test_near_valid_parquet_rows_give_pairs_or_errors_naming_row_and_field(rows):
    try:  # a column of one type, as a Parquet file holds it (rows whose values pyarrow cannot unify are skipped)
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return
    path = written(b"", ".parquet")
    try:
        pq.write_table(table, path)
    except (pa.ArrowException, TypeError, ValueError):
        return
    read_pairs(path.read_bytes(), ".parquet")


@FUZZ
@given(lines_of(KTO_ROW))
def test_near_valid_kto_rows_give_rows_or_errors_naming_line_and_field(content):
    read_feedback(content)


@FUZZ
@given(lines_of(PROMPT_ROW))
def test_near_valid_prompt_rows_give_prompts_or_errors_naming_the_line(content):
    read_prompts(content, ".jsonl")


# Config values: the settings' own names with any JSON-like value (and a few spelled as flags or unknown).
CONFIG_KEYS = st.sampled_from(
    [
        "iters",
        "beta",
        "loss",
        "loss_type",
        "loss-weights",
        "lora_keys",
        "learning_rate",
        "compile",
        "no_compile",
        "valid_data",
        "data",
        "model",
        "resume",
        "f_divergence_type",
        "label_smoothing",
        "max_length",
        "seed",
        "grad_checkpoint",
        "unknown_key",
    ]
)
CONFIG_VALUES = JSON_VALUES | st.sampled_from(["1e-3", "sigmoid,sft", "yes", "kto", "forward_kl", "-1", "1,2"])


@FUZZ
@given(st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, max_size=5), st.sampled_from([".yaml", ".toml"]))
def test_near_valid_config_files_give_settings_or_a_named_error(config, suffix):
    if suffix == ".yaml":
        try:
            content = yaml.safe_dump(config, allow_unicode=False).encode("utf-8", "surrogatepass")
        except yaml.YAMLError:
            return
    else:
        content = "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()).encode("utf-8", "surrogatepass")
    read_config(content, suffix)


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_a_bad_row_not_a_crash(tmp_path, depth):
    path = tmp_path / "pairs.jsonl"
    nested = '{"prompt": ' + "[" * depth + "]" * depth + ', "chosen": "a", "rejected": "b"}'
    path.write_text(json.dumps(VALID_PAIR) + "\n" + nested + "\n")
    result = load_pairs(path, skip_invalid=True)
    assert [e.line for e in result.errors] == [2] and len(result.pairs) == 1
