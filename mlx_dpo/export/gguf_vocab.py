"""An exported GGUF file's tokenizer metadata (`tokenizer.*`): copied from the GGUF the base came from, or
rebuilt from a Hugging Face byte-level BPE `tokenizer.json`.

Copying keeps every field with its value type, so a SentencePiece vocabulary (Gemma's 262k tokens with
scores and types) or a byte-level one goes back out exactly as llama.cpp wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.gguf_header import gguf_fields
from mlx_dpo.models.gguf_tokenizer import CONTROL_TOKEN, NORMAL_TOKEN, UNUSED_TOKEN, USER_DEFINED_TOKEN

# One metadata field to write: (key, value, gguf.GGUFValueType, item type of an array or None).
Entry = tuple[str, Any, Any, Any]

# A tokenizer.json pre-tokenizer, as (kind, detail) steps -> the llama.cpp pre-tokenizer that splits the same way.
_PRE_TOKENIZER_NAMES = {
    (("Digits", True), ("ByteLevel", True)): "smollm",
    (("ByteLevel", True),): "gpt-2",  # llama.cpp knows GPT-2's split as "gpt-2" ("gpt2" fails to load)
}


def _kv(key: str, value: Any, vtype: Any, sub_type: Any = None) -> Entry:
    return key, value, vtype, sub_type


def copied_tokenizer(source: Path) -> list[Entry]:
    """Every tokenizer.* field of the source GGUF, with its original value types."""
    import gguf

    T = gguf.GGUFValueType
    return [
        _kv(key, value, T(vtype), None if item_type is None else T(item_type))
        for key, (value, vtype, item_type) in gguf_fields(source, "tokenizer.").items()
    ]


def _pre_tokenizer_name(pre: dict | None) -> str | None:
    if not pre:
        return None
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    shape = []
    for step in steps:
        if step.get("type") == "Digits":
            shape.append(("Digits", bool(step.get("individual_digits"))))
        elif step.get("type") == "ByteLevel":
            shape.append(("ByteLevel", bool(step.get("use_regex", True))))
        else:
            return None
    return _PRE_TOKENIZER_NAMES.get(tuple(shape))


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def built_tokenizer(folder: Path, config: dict) -> tuple[list[Entry], list[str]]:
    """tokenizer.* metadata rebuilt from a Hugging Face byte-level BPE tokenizer.json, plus notes."""
    import gguf

    T = gguf.GGUFValueType
    try:
        tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        tok_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise MlxDpoError(f"{folder}: no {Path(e.filename).name}; GGUF export needs a tokenizer.json") from None
    except (OSError, ValueError) as e:
        raise MlxDpoError(f"{folder}: unreadable tokenizer files ({e})") from None
    bpe = tok.get("model", {})
    if bpe.get("type") != "BPE" or not (tok.get("decoder") or {}).get("type") == "ByteLevel":
        raise MlxDpoError(f"{folder}: GGUF export supports byte-level BPE tokenizers only")
    vocab: dict[str, int] = dict(bpe.get("vocab", {}))
    kinds: dict[int, int] = {}
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = int(added["id"])
        kinds[int(added["id"])] = CONTROL_TOKEN if added.get("special") else USER_DEFINED_TOKEN
    size = max(int(config.get("vocab_size", 0)), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]  # ids no token uses: placeholders, as llama.cpp's converter writes
    types = [UNUSED_TOKEN] * size
    for text, idx in vocab.items():
        tokens[idx], types[idx] = text, kinds.get(idx, NORMAL_TOKEN)
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe.get("merges", [])]

    notes = []
    pre = _pre_tokenizer_name(tok.get("pre_tokenizer"))
    if pre is None:
        pre = "default"
        notes.append("the tokenizer's pre-tokenizer has no known llama.cpp name; the GGUF says 'default'")
    entries = [
        _kv("tokenizer.ggml.model", "gpt2", T.STRING),
        _kv("tokenizer.ggml.pre", pre, T.STRING),
        _kv("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING),
        _kv("tokenizer.ggml.token_type", types, T.ARRAY, T.INT32),
    ]
    if merges:
        entries.append(_kv("tokenizer.ggml.merges", merges, T.ARRAY, T.STRING))
    for name, gguf_name in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        text = _token_text(tok_config.get(f"{name}_token"))
        idx = vocab.get(text) if text is not None else None
        if idx is None and isinstance(config.get(f"{name}_token_id"), (int, list)):
            ids = config[f"{name}_token_id"]
            idx = ids[0] if isinstance(ids, list) else ids
        if idx is not None:
            entries.append(_kv(f"tokenizer.ggml.{gguf_name}_token_id", int(idx), T.UINT32))
    entries.append(_kv("tokenizer.ggml.add_bos_token", bool(tok_config.get("add_bos_token", False)), T.BOOL))
    entries.append(_kv("tokenizer.ggml.add_eos_token", bool(tok_config.get("add_eos_token", False)), T.BOOL))
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # several named templates: llama.cpp takes the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        entries.append(_kv("tokenizer.chat_template", template, T.STRING))
    return entries, notes
