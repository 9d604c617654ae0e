"""Answer a chat prompt with a loaded model, streaming text as it is produced.

The app's Label screen and `mlx-dpo online` (`mlx_dpo.online.sampling`, batched) sample with the same
settings (`SampleSettings`, defined in mlx_dpo.settings so the app's UI reads it without mlx, and
re-exported here), the same sampler rule (`sampler_for`), the same prompt rule (`prompt_tokens`) and the
same decoding (`decode_answer`). A model without a chat template (a base model) continues the prompt's
text as it is, as training reads its rows (mlx_dpo.training.tokens); `template_note` says so.
"""

from __future__ import annotations

from collections.abc import Iterator

import mlx.core as mx

from mlx_dpo.compat import streaming_decode
from mlx_dpo.data.answers import Answer
from mlx_dpo.models.session import ModelSession
from mlx_dpo.settings import SampleSettings  # here for callers that sample; defined with the settings (no mlx)
from mlx_dpo.training.tokens import has_chat_template, plain_prompt

__all__ = [
    "AnswerStream",
    "SampleSettings",
    "answer",
    "chat_messages",
    "decode_answer",
    "prompt_tokens",
    "sampler_for",
    "stream_answer",
    "template_note",
]


def sampler_for(temperature: float, top_p: float):
    """mlx-lm's sampler for these settings (`temperature=0`: greedy); one rule for streamed and batched sampling."""
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=temperature, top_p=top_p)


def chat_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": prompt}]


def prompt_tokens(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The chat template rendered with a generation prompt, as token ids; without a template, the prompt's text
    (with the tokenizer's BOS), and MlxDpoError for a conversation."""
    if not has_chat_template(tokenizer):
        return list(tokenizer.encode(plain_prompt(messages)))
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def template_note(loaded: ModelSession) -> str | None:
    """What a user should know before sampling from a model without a chat template (None: it has one)."""
    tokenizer = getattr(loaded, "tokenizer", None)  # a test's stand-in for a loaded model may have none
    if tokenizer is None or has_chat_template(tokenizer):
        return None
    return (
        f"{loaded.name} has no chat template: no template applies, the prompt is continued as plain text "
        "(--chat-template FILE gives it one)"
    )


def decode_answer(tokenizer, ids: list[int]) -> str:
    """An answer's text from its token ids, decoded as streaming decodes it (mlx-lm's streaming detokenizer
    drops the space a BPE answer's first token starts with; `tokenizer.decode` keeps it)."""
    return streaming_decode(tokenizer, ids)


class AnswerStream:
    """An answer's text piece by piece; once the pieces run out, `finished` says whether the model ended it with its
    end-of-turn token (mlx-lm's finish reason "stop") rather than reaching max tokens ("length")."""

    def __init__(self, responses) -> None:
        self._responses = responses
        self.finished = False

    def __iter__(self) -> Iterator[str]:
        for response in self._responses:
            if response.finish_reason is not None:
                self.finished = response.finish_reason == "stop"
            if response.text:
                yield response.text

    def close(self) -> None:
        self._responses.close()


def stream_answer(
    loaded: ModelSession,
    messages: list[dict[str, str]],
    *,
    max_tokens: int = SampleSettings.max_tokens,
    temperature: float = SampleSettings.temperature,
    top_p: float = SampleSettings.top_p,
    seed: int | None = None,
) -> AnswerStream:
    """The answer's text piece by piece (an AnswerStream, which knows afterwards whether it finished);
    `temperature=0` is greedy decoding. The defaults are SampleSettings'."""
    from mlx_lm import stream_generate

    if seed is not None:
        mx.random.seed(seed)
    sampler = sampler_for(temperature, top_p)
    tokens = prompt_tokens(loaded.tokenizer, messages)
    return AnswerStream(stream_generate(loaded.model, loaded.tokenizer, tokens, max_tokens=max_tokens, sampler=sampler))


def answer(loaded: ModelSession, messages: list[dict[str, str]], **kwargs) -> str:
    """The whole answer, as an Answer that knows whether it finished (mlx_dpo.data.answers)."""
    stream = stream_answer(loaded, messages, **kwargs)
    return Answer("".join(stream), stream.finished)
