"""The rows of a data file, whatever its format: JSON Lines (one object per line) or Parquet (one per row).

    for place, row, problem in read_rows(path, shown="data.jsonl"):  # problem: why the row is not an object

Every reader of pairs or feedback (pairs.py, feedback.py) walks rows through here, so a row is checked by the
same rules (`check_pair`) whichever file it came from, and is named by where it is: `file:line` in a JSON Lines
file (lines count from 1, as editors do), `file row N` in a Parquet file (rows count from 0, as `datasets` and
pandas do). A `.json` file is read as JSON Lines (as `datasets` reads it); a single JSON array is refused
with what to do. Gzipped JSON Lines (`.jsonl.gz`) are read as well. Parquet needs `pyarrow` (the optional
`parquet` extra, ~55 MB): imported only when a Parquet file is read, and its absence is one line saying how to
install it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_dpo.errors import MlxDpoError

PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")  # gzipped JSON Lines: Anthropic/hh-rlhf's files
DATA_SUFFIXES = PARQUET_SUFFIXES + JSONL_SUFFIXES
_PARQUET_BATCH = 1024  # rows converted to Python at a time
MAX_LISTED_ERRORS = 20


@dataclass(frozen=True)
class Place:
    """Where a row is: a line of a JSON Lines file (from 1) or a row of a Parquet file (from 0)."""

    file: str
    index: int
    kind: str = "line"  # "line" or "row"

    def __str__(self) -> str:
        return f"{self.file}:{self.index}" if self.kind == "line" else f"{self.file} row {self.index}"


@dataclass(frozen=True)
class RowError:
    """One problem of one row: where (file and line or row) and which field."""

    file: str
    line: int  # a JSON Lines file's line (from 1), or a Parquet file's row (from 0) when kind is "row"
    field: str | None
    message: str
    kind: str = "line"

    def __str__(self) -> str:
        where = f"{Place(self.file, self.line, self.kind)}:"
        return f"{where} field '{self.field}': {self.message}" if self.field else f"{where} {self.message}"


def invalid_rows_error(name: str, skipped: int, errors: list[RowError]) -> MlxDpoError:
    """The one refusal of a data file with bad rows (pairs or KTO feedback): each row's file, line and field."""
    return MlxDpoError(
        f"{name}: {skipped} invalid row{'s' if skipped != 1 else ''}:\n{_list_errors(errors)}"
        "\nFix them, or pass --skip-invalid to drop invalid rows."
    )


def _list_errors(errors: list[RowError]) -> str:
    lines = [f"  {e}" for e in errors[:MAX_LISTED_ERRORS]]
    if len(errors) > MAX_LISTED_ERRORS:
        lines.append(f"  ... and {len(errors) - MAX_LISTED_ERRORS} more")
    return "\n".join(lines)


def read_text(path: Path, gzipped: bool = False) -> str:
    """A UTF-8 text file's contents, or MlxDpoError naming the file (and the line of a bad byte)."""
    try:
        data = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
    except FileNotFoundError:
        raise MlxDpoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MlxDpoError(f"{path}: is a folder, not a file") from None
    except (OSError, EOFError) as e:  # gzip's BadGzipFile is an OSError; a cut-off one, EOFError
        raise MlxDpoError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        return data.decode("utf-8-sig")  # tolerate the BOM some editors write
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        bad = f"byte 0x{data[e.start]:02x}"
        raise MlxDpoError(f"{path}:{line}: not valid UTF-8 ({bad}); save the file as UTF-8") from None


def is_data_file(name: str | Path) -> bool:
    """Whether a file's name says it is one this module reads (Parquet, JSON Lines, gzipped JSON Lines)."""
    return str(name).lower().endswith(DATA_SUFFIXES)


def read_rows(path: Path, shown: str | None = None) -> Iterator[tuple[Place, Any, str | None]]:
    """(where, the row's object, None) for each row, or (where, None, why it is not one) for a line that is not
    valid JSON. Blank lines are skipped (their numbers still count). `shown`: the file's name in messages."""
    shown = shown or str(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        yield from _parquet_rows(path, shown)
        return
    text = read_text(path, gzipped=path.name.lower().endswith(".gz"))
    if text.lstrip().startswith("["):
        raise MlxDpoError(
            f"{shown}: holds one JSON array; expected JSON Lines (one object per line), e.g. "
            "`jq -c '.[]' file.json > file.jsonl`"
        )
    # Split on "\n" only: str.splitlines would also break at U+2028 and friends, which JSON strings may hold raw.
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        obj, not_json = parse_json_line(line)
        yield Place(shown, line_no), obj, not_json


def _parquet_rows(path: Path, shown: str) -> Iterator[tuple[Place, Any, str | None]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MlxDpoError(
            f"{shown}: reading Parquet needs pyarrow; run: pip install 'mlx-dpo[parquet]' (or pip install pyarrow)"
        ) from None
    import pyarrow as pa

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH)
        index = 0
        for batch in batches:
            for row in batch.to_pylist():  # list<struct<role, content>> columns come back as lists of dicts
                yield Place(shown, index, "row"), row, None
                index += 1
    except (pa.ArrowException, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MlxDpoError(f"{shown}: not a readable Parquet file ({first})") from None


# A user's file may hold anything: JSON cut short, arrays nested thousands deep (Python's parser gives up with a
# RecursionError), or half of a UTF-16 surrogate pair written as an escape ("\\ud800"): valid JSON, but not text
# UTF-8 (the store, a tokenizer, a file written back) can carry. Each is a bad row named by its place, not a crash.
SURROGATE = "holds a lone surrogate escape (\\ud800-\\udfff), which is not text; fix the file's encoding"


def parse_json_line(line: str) -> tuple[Any, str | None]:
    """A line's value, or (None, what is wrong with it)."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} (column {e.colno})"
    except RecursionError:  # "[[[[..." thousands deep; no row needs it
        return None, "not valid JSON here: nested too deeply"


def text_problem(text: str) -> str | None:
    """What keeps `text` from being a field's text ("is empty", or a lone surrogate), or None."""
    if not text.strip():
        return "is empty"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE
    return None
