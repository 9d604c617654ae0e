"""Read a GGUF file's metadata header without its tensors.

Copying a tokenizer into an exported GGUF, or reading a base's license, needs only the key-value
header. Neither the `gguf` package's reader (seconds per 50k-token vocabulary) nor `mx.load` (which
loads every tensor too) is needed for that: this walks the header of a memory-mapped file.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np

from mlx_dpo.errors import MlxDpoError

# GGUF metadata value types (gguf.GGUFValueType) -> struct format of one value.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# key -> (value, value type, array item type or None)
Fields = dict[str, tuple[Any, int, int | None]]


class _Header:
    """A cursor over the header bytes."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        self.pos += n
        return self.buf[self.pos - n : self.pos].decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        return self.unpack(_SCALAR_FORMATS[vtype])[0]

    def array(self) -> tuple[list, int]:
        item_type, n = self.unpack("<IQ")
        if item_type in _SCALAR_FORMATS:  # numbers: one slice, not n reads
            dtype = np.dtype(_SCALAR_FORMATS[item_type])
            items = np.frombuffer(self.buf, dtype, n, self.pos).tolist()
            self.pos += n * dtype.itemsize
            return items, item_type
        return [self.value(item_type) for _ in range(n)], item_type


def gguf_fields(path: Path, prefix: str = "", *, only: str | None = None) -> Fields:
    """Metadata of a GGUF file whose keys start with `prefix` (or just the key `only`):
    key -> (value, value type, array item type)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise MlxDpoError(f"{path}: not a GGUF file")
            header = _Header(buf)
            header.pos = 8  # magic + version
            _, kv_count = header.unpack("<QQ")
            fields: Fields = {}
            for _ in range(kv_count):
                key = header.string()
                (vtype,) = header.unpack("<I")
                if vtype == _ARRAY:
                    items, item_type = header.array()
                    entry = (items, vtype, item_type)
                else:
                    entry = (header.value(vtype), vtype, None)
                if key.startswith(prefix):
                    fields[key] = entry
                if only is not None and key == only:
                    return {only: fields[only]} if only in fields else {}
            return {k: v for k, v in fields.items() if only is None or k == only}
    except (OSError, ValueError, KeyError, struct.error) as e:
        raise MlxDpoError(f"{path}: cannot read GGUF metadata ({e})") from None
