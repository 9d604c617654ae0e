"""A SentencePiece-style GGUF vocabulary (`tokenizer.ggml.model = llama`: Gemma, Phi-3, Llama 2) rebuilt as a
`tokenizers` BPE, checked against llama.cpp's own tokenizer on a tiny vocabulary written here (with and without
the space prefix). The real 262k-token Gemma 3 vocabulary is checked the same way in tests/test_gemma3.py.
"""

from __future__ import annotations

from typing import Any

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import gguf_fixtures as tiny
import pytest
from mlx_lm.tokenizer_utils import SPMStreamingDetokenizer
from mlx_lm.utils import load_tokenizer
from test_tokenizer import random_texts

from mlx_dpo.models.gguf import convert_gguf

TEXTS = [
    "the quick brown fox",
    "hello world",
    " the",
    "  two spaces",
    "the\n\nhello",
    "Hello World!",
    "<start_of_turn>the fox<tool>hello",
    "x <s> y </s>",
    "naïve 🤖 ü",
    "quick, brown. fox? 42",
    "",
    "\t",
    "the   quick",
    "<tool>",
]


@pytest.fixture(scope="module", params=[True, False], ids=["space-prefix", "no-space-prefix"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """(our tokenizer, llama.cpp's) for one tiny SentencePiece GGUF."""
    import llama_cpp  # a dev dependency: missing, this fails

    root = tmp_path_factory.mktemp("spm")
    path = root / "spm.gguf"
    tiny.write_spm_llama_gguf(path, add_space_prefix=request.param)
    return load_tokenizer(convert_gguf(path, root / "model")), llama_cpp.Llama(
        str(path), vocab_only=True, verbose=False
    )


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_llama_cpps_with_bos(pair: tuple[Any, Any], text: str) -> None:
    ours, llama = pair
    assert ours.encode(text) == llama.tokenize(text.encode(), add_bos=True, special=True)


def test_ids_equal_llama_cpps_on_random_mixtures(pair: tuple[Any, Any]) -> None:
    ours, llama = pair
    texts = random_texts(300, seed=2)
    assert [t for t in texts if ours.encode(t) != llama.tokenize(t.encode(), add_bos=True, special=True)] == []


def test_merges_follow_the_scores_and_bytes_fall_back(pair: tuple[Any, Any]) -> None:
    ours, _ = pair
    tokens = tiny.spm_vocab()[0]
    assert [tokens[i] for i in ours.encode(" the quick", add_special_tokens=False)][-2:] == ["\u2581the", "\u2581quick"]
    assert [tokens[i] for i in ours.encode("🤖", add_special_tokens=False)][-4:] == [
        "<0xF0>",
        "<0x9F>",
        "<0xA4>",
        "<0x96>",
    ]


def test_decode_inverts_encode_and_streams_the_same_text(pair: tuple[Any, Any]) -> None:
    from mlx_dpo.models.generate import decode_answer

    ours, _ = pair
    assert isinstance(ours.detokenizer, SPMStreamingDetokenizer)  # mlx-lm recognised the decoder
    for text in [t for t in TEXTS if "<" not in t] + random_texts(100, seed=3):
        ids = ours.encode(text, add_special_tokens=False)
        # With a space prefix, the text after an added token gets one too (llama.cpp encodes it so: see above).
        if "\n\n" not in text and "<|im_end|>" not in text:
            assert ours.decode(ids) == text
        if not ours.detokenizer.trim_space:  # Gemma's case; with a prefix, mlx-lm trims the first token's space
            assert decode_answer(ours, ids) == ours.decode(ids)
