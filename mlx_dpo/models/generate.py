"""Answer a chat prompt with a loaded model, streaming text as it is produced."""

from __future__ import annotations

from typing import Iterator

import mlx.core as mx

from mlx_dpo.models.load import LoadedModel


def chat_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": prompt}]


def prompt_tokens(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The chat template rendered with a generation prompt, as token ids."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def stream_answer(
    loaded: LoadedModel,
    messages: list[dict[str, str]],
    *,
    max_tokens: int = 256,
    temp: float = 0.7,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield the answer's text piece by piece; `temp=0` is greedy decoding."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    if seed is not None:
        mx.random.seed(seed)
    sampler = make_sampler(temp=temp, top_p=top_p)
    tokens = prompt_tokens(loaded.tokenizer, messages)
    for response in stream_generate(
        loaded.model, loaded.tokenizer, tokens, max_tokens=max_tokens, sampler=sampler
    ):
        if response.text:
            yield response.text


def answer(loaded: LoadedModel, messages: list[dict[str, str]], **kwargs) -> str:
    return "".join(stream_answer(loaded, messages, **kwargs))
