"""Many prompts' answers at once: mlx-lm's batched generation with the app's sampler settings.

`sample_answers` renders each prompt with the chat template (the same `prompt_tokens` rule the app uses),
repeats it `n` times and hands the whole list to mlx-lm's `batch_generate`, which keeps up to `batch_size`
sequences in flight (continuous batching) and right-pads prompts of unequal length inside its KV cache.

What a caller can rely on:
- Greedy decoding (`temperature=0`) gives, for each prompt, the answer single-prompt generation gives
  (`mlx_dpo.models.generate.answer`): checked in tests on a tiny model and on the default model.
  Padding does not leak into the answers. Batching is a fast path, so it is checked on each model before
  first use (`batching_problem`: two prompts of different lengths, a few greedy tokens, batched against one at
  a time, as `training/fast_path.py` checks the log-prob paths). A family whose caches mlx-lm cannot batch, or
  whose batched answers differ, samples one answer at a time instead, and one Status line says why.
- With `temperature > 0` the `n` answers of a prompt are separate draws. Answers that come out identical
  (a short answer, a peaked model) are drawn again, up to `RETRIES` times; after that they stay identical and
  the caller decides (the store refuses a pair of identical answers). `n >= 2` with `temperature=0` is refused:
  greedy decoding cannot give two answers.
- Reproducible: the same model, prompts, settings, `seed` and `batch_size` give the same answers. The draws
  are not the ones single-prompt sampling makes with the same seed (the random stream is consumed per batch
  step, for all sequences in flight), and a different `batch_size` gives different (equally valid) draws.
- Each prompt is prefilled once and its KV cache shared by its `n` answers (`shared_prefill`, the default;
  compat.generate_shared): the same answers at temperature 0 as prefilling every answer again, checked per model
  before first use (`shared_prefill_problem`), else each answer prefills its prompt and one Status line says why.
  Sequences leave the batch as they stop, and waiting ones take their place.
- `keep_logps`: each sampled token's log-prob under the untempered logits (no temperature or top-p), kept in
  `Samples.sampled` with the token ids and the rendered prompts, so a round whose reference is the sampler needs
  no reference pass for them (mlx_dpo.online.free_reference). Only the shared-prefill path keeps them.
- Each answer is an `Answer` (mlx_dpo.data.answers) that knows whether it finished: mlx-lm's generation reports
  why each sequence stopped ("stop": it sampled an end-of-turn token; "length": it reached max tokens), and an
  answer cut at max tokens has `finished` False. Nothing is guessed from the text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx

from mlx_dpo.compat import Generated, Sampled, generate_batched, generate_shared
from mlx_dpo.data.answers import Answer
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Status
from mlx_dpo.models.generate import SampleSettings, decode_answer, prompt_tokens, sampler_for
from mlx_dpo.models.session import ModelSession

RETRIES = 2  # extra draws for a prompt whose answers came out identical
_PROBE = ("Hi", "Tell me one thing about the sea, please, in a few words.")  # lengths differ: padding shows


@dataclass(frozen=True)
class Samples:
    answers: list[list[Answer]]  # answers[i]: the n answers to prompts[i], each knowing whether it finished
    tokens: int  # tokens generated, all answers and retries included (the end-of-sequence token not counted)
    seconds: float  # wall time of the generation, tokenization included
    prompt_ids: list[list[int]] | None = None  # each prompt as the sampler read it (with `keep_logps`)
    sampled: list[list[Sampled]] | None = None  # answers[i][j]'s token ids and log-probs (with `keep_logps`)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def run_seed(settings: SampleSettings, seed: int) -> int:
    """The seed the draws use: the caller's `seed` (e.g. the round) combined with the sampler's own seed,
    so a person who fixed `--seed` gets the same run again and each round still draws new answers."""
    return ((settings.seed or 0) * 1_000_003 + seed) % 2**31


def _batched(loaded: ModelSession, tokens: list[list[int]], settings: SampleSettings, batch_size: int) -> Generated:
    """Each answer's token ids and finish, `batch_size` sequences in flight (mlx-lm's `batch_generate` loop, keeping
    each sequence's finish reason: compat.generate_batched)."""
    return generate_batched(
        loaded.model,
        tokens,
        max_tokens=settings.max_tokens,
        stop_tokens=list(loaded.tokenizer.eos_token_ids),
        sampler=sampler_for(settings.temperature, settings.top_p),
        batch_size=batch_size,
    )


def _one_at_a_time(loaded: ModelSession, tokens: list[list[int]], settings: SampleSettings) -> Generated:
    """Each answer's token ids and finish with mlx-lm's single-sequence generation (the app's streaming path)."""
    from mlx_lm import stream_generate

    sampler = sampler_for(settings.temperature, settings.top_p)
    out = []
    for prompt in tokens:
        ids, finished = [], False
        for r in stream_generate(
            loaded.model, loaded.tokenizer, prompt, max_tokens=settings.max_tokens, sampler=sampler
        ):
            if r.finish_reason != "stop":
                ids.append(r.token)
            finished = r.finish_reason == "stop"
        out.append((ids, finished))
    return out


def batching_probe(loaded: ModelSession, max_tokens: int = 4) -> tuple[Generated, Generated]:
    """Greedy answers (token ids, finished) to two prompts of different lengths, batched together and one at a time."""
    greedy = SampleSettings(temperature=0.0, max_tokens=max_tokens)
    probe = [prompt_tokens(loaded.tokenizer, [{"role": "user", "content": text}]) for text in _PROBE]
    return _batched(loaded, probe, greedy, 2), _one_at_a_time(loaded, probe, greedy)


def batching_problem(loaded: ModelSession) -> str | None:
    """Why batched generation is not used on this model (None: it reproduced one-at-a-time greedy answers on
    the probe). Measured once per model session, kept in its record of self-checks (`loaded.checks`)."""
    if not loaded.checks.batching_checked:
        try:
            batched, single = batching_probe(loaded)
            found = (
                None if batched == single else "its batched greedy answers differ from one-at-a-time ones on a probe"
            )
        except Exception as e:  # e.g. a cache type mlx-lm cannot batch yet
            found = f"mlx-lm cannot batch it ({type(e).__name__}: {' '.join(str(e).split())})"
        loaded.checks.batching = found
    return loaded.checks.batching


def shared_prefill_problem(loaded: ModelSession) -> str | None:
    """Why prompts are not prefilled once per prompt on this model (None: two greedy answers to each of two probe
    prompts from one shared prefill equal one-at-a-time answers). Measured once per model session."""
    if loaded.checks.unchecked("shared_prefill"):
        greedy = SampleSettings(temperature=0.0, max_tokens=4)
        probe = [prompt_tokens(loaded.tokenizer, [{"role": "user", "content": text}]) for text in _PROBE]
        try:
            shared = [(a.ids, a.finished) for group in _shared(loaded, probe, greedy, 2, 4) for a in group]
            single = [answer for answer in _one_at_a_time(loaded, probe, greedy) for _ in range(2)]
            found = None if shared == single else "its answers differ from one-at-a-time ones on a probe"
        except Exception as e:  # e.g. a cache type without `merge`
            found = f"mlx-lm cannot batch its prefilled caches ({type(e).__name__}: {' '.join(str(e).split())})"
        loaded.checks.shared_prefill = found
    return loaded.checks.shared_prefill


def _shared(
    loaded: ModelSession,
    tokens: list[list[int]],
    settings: SampleSettings,
    n: int,
    batch_size: int,
    logps: bool = False,
) -> list[list[Sampled]]:
    return generate_shared(
        loaded.model,
        tokens,
        n,
        max_tokens=settings.max_tokens,
        stop_tokens=list(loaded.tokenizer.eos_token_ids),
        sampler=sampler_for(settings.temperature, settings.top_p),
        batch_size=batch_size,
        logps=logps,
    )


def _generate(
    loaded: ModelSession,
    tokens: list[list[int]],
    settings: SampleSettings,
    n: int,
    batch_size: int,
    shared: bool,
    logps: bool,
) -> list[list[Sampled]]:
    """`n` answers to each of `tokens`' prompts, by the path the checks allow."""
    if shared:
        return _shared(loaded, tokens, settings, n, batch_size, logps)
    repeated = [t for t in tokens for _ in range(n)]
    generated = (
        _one_at_a_time(loaded, repeated, settings)
        if batching_problem(loaded)
        else _batched(loaded, repeated, settings, batch_size)
    )
    flat = [Sampled(ids, finished) for ids, finished in generated]
    return [flat[i * n : (i + 1) * n] for i in range(len(tokens))]


def _answer(loaded: ModelSession, sampled: Sampled) -> Answer:
    # Decoded as the app's streaming decodes, so a batched answer and a streamed one compare equal.
    return Answer(decode_answer(loaded.tokenizer, sampled.ids), sampled.finished)


def _check(prompts: list[list[dict]], settings: SampleSettings, n: int, batch_size: int) -> None:
    try:
        settings.check()
    except ValueError as e:
        raise MlxDpoError(f"sampler settings: {e}") from None
    if n < 1:
        raise MlxDpoError(f"samples per prompt must be at least 1 (got {n})")
    if n >= 2 and settings.temperature == 0:
        raise MlxDpoError(
            "temperature 0 (greedy) gives the same answer every time; use a temperature above 0 to sample two answers"
        )
    if batch_size < 1:
        raise MlxDpoError(f"batch size must be at least 1 (got {batch_size})")
    for i, messages in enumerate(prompts):
        if not messages or messages[-1].get("role") != "user":
            raise MlxDpoError(f"prompt {i + 1}: a prompt must be a list of chat messages ending with the user's")


def sample_answers(
    loaded: ModelSession,
    prompts: list[list[dict]],
    settings: SampleSettings,
    *,
    n: int = 2,
    seed: int = 0,
    batch_size: int = 8,
    shared_prefill: bool = True,
    keep_logps: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> Samples:
    """`n` answers to each prompt (a list of chat messages ending with the user's), `batch_size` sequences
    generated together. See the module docstring for what is guaranteed about padding, draws and seeds.
    `on_event` hears one Status line when the model cannot take the path asked for."""
    _check(prompts, settings, n, batch_size)
    if not prompts:
        return Samples([], 0, 0.0)
    say = on_event or (lambda e: None)
    shared = shared_prefill and not (problem := shared_prefill_problem(loaded))
    if shared_prefill and not shared:
        say(Status(f"sampling: each answer prefills its prompt ({problem})"))
    if not shared and (problem := batching_problem(loaded)):
        say(Status(f"sampling one answer at a time: {problem}"))
    start = time.perf_counter()
    rendered = [prompt_tokens(loaded.tokenizer, messages) for messages in prompts]
    mx.random.seed(run_seed(settings, seed))
    logps = keep_logps and shared
    sampled = _generate(loaded, rendered, settings, n, batch_size, shared, logps)
    total = sum(len(a.ids) for group in sampled for a in group)
    answers = [[_answer(loaded, a) for a in group] for group in sampled]
    for _ in range(RETRIES if n >= 2 else 0):
        again = [i for i, group in enumerate(answers) if len(set(group)) < n]
        if not again:
            break
        redraw = [(i, j) for i in again for j in _repeats(answers[i])]
        more = _generate(loaded, [rendered[i] for i, _ in redraw], settings, 1, batch_size, shared, logps)
        for (i, j), [a] in zip(redraw, more):
            total += len(a.ids)
            answers[i][j], sampled[i][j] = _answer(loaded, a), a
    return Samples(answers, total, time.perf_counter() - start, rendered if logps else None, sampled if logps else None)


def _repeats(group: list[str]) -> list[int]:
    """Indices of answers equal to an earlier one in the group (the first of each stays)."""
    seen: set[str] = set()
    out = []
    for j, text in enumerate(group):
        if text in seen:
            out.append(j)
        seen.add(text)
    return out
