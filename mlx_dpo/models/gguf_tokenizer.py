"""A GGUF file's tokenizer as `tokenizer.json` + `tokenizer_config.json`, built with the `tokenizers` library.

Two vocabularies are in the files people have (`tokenizer.ggml.model`):

- `gpt2`: byte-level BPE with its merges (SmolLM, Llama 3, Qwen). The pre-tokenizer's split regex is
  llama.cpp's for the file's `tokenizer.ggml.pre` name.
- `llama`: SentencePiece's BPE (Gemma, Phi-3, Llama 2): tokens with scores and no merges. llama.cpp merges
  the adjacent pair whose joined token scores highest, so the merges are rebuilt from the scores: every
  way a token splits into two tokens, best-scoring token first. Spaces are "▁"; a byte outside the
  vocabulary falls back to its `<0xNN>` token; a space is put in front only when `add_space_prefix` says so.

Either way, control tokens (`<bos>`, `<start_of_turn>`) are special tokens and user-defined ones (Gemma's
runs of spaces and newlines) are added tokens matched before the model, as llama.cpp matches them; BOS/EOS
are added by the post-processor when the file says so (transformers ignores tokenizer_config's flags when
a tokenizer.json exists); the chat template is copied where the file has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlx_dpo.errors import MlxDpoError

NORMAL_TOKEN, UNKNOWN_TOKEN, CONTROL_TOKEN, USER_DEFINED_TOKEN, UNUSED_TOKEN, BYTE_TOKEN = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # SentencePiece's "▁"

# llama.cpp pre-tokenizer names -> split regex applied before byte-level BPE. None: GPT-2's.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (  # Llama 3's, with digits one at a time
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS: dict[str, tuple[bool, str | None]] = {
    # name: (split digits one by one, custom split regex)
    "default": (False, None),
    "gpt2": (False, None),
    "gpt-2": (False, None),
    "smollm": (True, None),
    "starcoder": (True, None),
    "llama-bpe": (False, _LLAMA3_SPLIT),
    "llama3": (False, _LLAMA3_SPLIT),
    "qwen2": (False, _QWEN2_SPLIT),
}


def build_tokenizer_files(metadata: Mapping[str, Any], source: str, arch: str) -> dict[str, Any]:
    """`tokenizer.json` (as the text `tokenizers` writes: tens of MB for a 262k vocabulary, not worth parsing
    again) and `tokenizer_config.json` contents for the GGUF file's vocabulary."""
    kind = metadata.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tok = _byte_level_bpe(metadata, source)
    elif kind == "llama":
        tok = _sentencepiece_bpe(metadata)
    else:
        raise MlxDpoError(
            f"{source}: tokenizer type {kind!r} is not supported (byte-level BPE 'gpt2' and SentencePiece 'llama' are)"
        )
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    types = metadata.get("tokenizer.ggml.token_type") or [NORMAL_TOKEN] * len(tokens)
    _add_special_tokens(tok, tokens, types, byte_level=kind == "gpt2")

    def token(name: str) -> str | None:
        idx = metadata.get(f"tokenizer.ggml.{name}_token_id")
        return tokens[int(idx)] if idx is not None and int(idx) < len(tokens) else None

    # llama.cpp adds BOS to a SentencePiece vocabulary whose file does not say otherwise.
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")) and token("bos") is not None
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False)) and token("eos") is not None
    _add_bos_eos(tok, metadata, token("bos"), token("eos"), add_bos, add_eos, byte_level=kind == "gpt2")
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding") or token("eos"),
        "unk_token": token("unknown"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(metadata.get(f"{arch}.context_length", 2048)),
    }
    if metadata.get("tokenizer.chat_template"):
        tokenizer_config["chat_template"] = metadata["tokenizer.chat_template"]
    return {"tokenizer.json": tok.to_str(), "tokenizer_config.json": tokenizer_config}


def _byte_level_bpe(metadata: Mapping[str, Any], source: str):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    pre_name = metadata.get("tokenizer.ggml.pre", "default")
    if pre_name not in _PRE_TOKENIZERS:
        raise MlxDpoError(
            f"{source}: pre-tokenizer {pre_name!r} is not supported (supported: {', '.join(_PRE_TOKENIZERS)})"
        )
    split_digits, split_regex = _PRE_TOKENIZERS[pre_name]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    steps = []
    if split_digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    if split_regex:
        steps.append(pre_tokenizers.Split(Regex(split_regex), behavior="isolated"))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_regex is None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def spm_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """The BPE merges a SentencePiece vocabulary implies: each split of a normal token into two tokens,
    ranked by the joined token's score (higher first), ties by the halves' ids."""
    ids = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for i, tok in enumerate(tokens):
        if types[i] != NORMAL_TOKEN or len(tok) < 2:
            continue
        score = -scores[i]
        for cut in range(1, len(tok)):
            left = ids.get(tok[:cut])
            if left is not None:
                right = ids.get(tok[cut:])
                if right is not None:
                    ranked.append((score, left, right))
    ranked.sort()
    return [(tokens[left], tokens[right]) for _, left, right in ranked]


def _sentencepiece_bpe(metadata: Mapping[str, Any]):
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    scores = metadata.get("tokenizer.ggml.scores") or [-float(i) for i in range(len(tokens))]
    types = metadata.get("tokenizer.ggml.token_type") or [NORMAL_TOKEN] * len(tokens)
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None and int(unk_id) < len(tokens) else None
    tok = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(tokens)},
            merges=spm_merges(tokens, scores, types),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend(SPACE)] if prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPACE)])
    # The exact decoder sequences mlx-lm recognises, so it streams with its SentencePiece detokenizer.
    pieces = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(pieces + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok


def _add_special_tokens(tok, tokens: list[str], types: list[int], *, byte_level: bool) -> None:
    from tokenizers import AddedToken

    special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == CONTROL_TOKEN]
    if byte_level:  # as before: every marked token whole, and special
        special += [
            AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED_TOKEN
        ]
        tok.add_special_tokens(special)
        return
    tok.add_special_tokens(special)
    # llama.cpp matches user-defined tokens in the raw text, before the model, whether or not specials are parsed.
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED_TOKEN]
    )


def _add_bos_eos(
    tok,
    metadata: Mapping[str, Any],
    bos: str | None,
    eos: str | None,
    add_bos: bool,
    add_eos: bool,
    *,
    byte_level: bool,
) -> None:
    from tokenizers import processors

    if not (add_bos or add_eos):
        return
    single = [bos] * add_bos + ["$A"] + [eos] * add_eos
    pair = single + [bos] * add_bos + ["$B:1"] + [eos] * add_eos
    specials = [(bos, int(metadata["tokenizer.ggml.bos_token_id"]))] * add_bos
    specials += [(eos, int(metadata["tokenizer.ggml.eos_token_id"]))] * (add_eos and eos != bos)
    template = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    tok.post_processor = (
        processors.Sequence([processors.ByteLevel(trim_offsets=False), template]) if byte_level else template
    )
