"""Everything mlx-dpo takes from mlx and mlx-lm beyond their documented API, in one place.

A new mlx-lm release may change any of these without notice, so each says what it relies on. pyproject.toml
bounds mlx and mlx-lm to the versions the suite ran on, below their next minor release (tests/test_compat.py names
them); `make test-latest` runs the suite against the newest releases, so raising a bound is one command to check.

  has_mlx_lm_layout     models are `Model.model` with `embed_tokens`, `layers` and a `cache=` argument
  output_head           a model's own `__call__`, replayed after `model.model` on given hidden states
  MaskedCache           a KV cache that answers the `make_mask` call mlx-lm's layers make (MASK_LAYOUTS)
  SegmentCache          the same protocol for rows that hold several sequences side by side (packed rows)
  architecture_known    mlx-lm's private model-class lookup `_get_classes`
  weights_mismatch      the text of mlx's `load_weights(strict=True)` errors
  generate_batched      mlx-lm's `BatchGenerator` loop, keeping each sequence's finish reason
  generate_shared       the same loop fed per-prompt KV caches (`make_prompt_cache`), each prompt prefilled once
  streaming_decode      the tokenizer wrapper's streaming detokenizer
  lora_base_layers      the base layer inside mlx-lm's LoRA/DoRA layers (`.linear`, `.embedding`)
  fused_lora_layers     mlx-lm's LoRA/DoRA layers' own `fuse`
  checkpoint_layers     mlx-lm's `grad_checkpoint`, which patches a layer class
  shards                mlx-lm's `make_shards`

What mlx-lm documents (its README, LORA.md) is used where it is needed and is not here: `mlx_lm.load`,
`utils.load_model`/`load_tokenizer`/`dequantize_model`, `stream_generate` and its responses' `finish_reason`,
`sample_utils.make_sampler`, `tuner.utils.linear_to_lora_layers`, `utils.DEFAULT_ALLOW_PATTERNS`.

The fast paths built on these (output_head, MaskedCache) are also checked on every model before use
(training/fast_path.py), so a change there turns a fast path off with a Status line rather than a wrong number.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn

# --- the model layout ---------------------------------------------------------------------------------------------


def has_mlx_lm_layout(model: Any) -> bool:
    """Relies on: mlx-lm's text models are `Model` with the transformer as `.model`, which holds `embed_tokens` and
    `layers` and takes `cache=` (one cache per layer). Not part of mlx-lm's documented API, but every family in
    tests/family_models.py has it; a model without it runs whole sequences (batching.layout_for)."""
    inner = getattr(model, "model", None)
    return inner is not None and hasattr(inner, "layers") and hasattr(inner, "embed_tokens")


class _GivenHidden:
    """Stands in for `model.model` in the model's own forward: returns the given final hidden states,
    and lends every other attribute (embed_tokens, args, ...) from the real inner model."""

    def __init__(self, inner: nn.Module, hidden: mx.array):
        self._inner, self._hidden = inner, hidden

    def __call__(self, *args, **kwargs) -> mx.array:
        return self._hidden

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class _Tail:
    """The model with `.model` replaced by `_GivenHidden`: its own `__call__` then runs only what it
    does after the transformer (the vocabulary projection, soft-capping, logit scales, ...)."""

    def __init__(self, model: nn.Module, hidden: mx.array):
        self._model, self.model = model, _GivenHidden(model.model, hidden)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def output_head(model: nn.Module) -> Callable[[mx.array], mx.array]:
    """Hidden states -> logits, exactly as the model's own forward computes them after `model.model`.

    Relies on: `type(model).__call__(self, inputs, ...)` computes `self.model(inputs, ...)` and then only
    position-wise steps (the head, gemma2's soft-cap, cohere's and granite's scales), reading no other input.
    Replaying it on a stand-in (`_Tail`) avoids knowing each family's head. A forward that does anything else
    with its inputs is caught by the self-check (training/fast_path.py), which then turns this path off.
    """
    call = type(model).__call__

    def head(hidden: mx.array) -> mx.array:
        return call(_Tail(model, hidden), mx.zeros(hidden.shape[:2], dtype=mx.int32))

    return head


# --- the cache and mask protocol --------------------------------------------------------------------------------

# How many axes the attention mask has. Relies on: mlx-lm's attention takes (n, 1, queries, keys); a few
# families (gemma2 with grouped-query heads) split the heads into (kv heads, repeats) themselves and need
# (n, 1, 1, queries, keys). The self-check (training/fast_path.py) finds which one a model takes.
MASK_LAYOUTS = (4, 5)


def attention_mask(key_valid: mx.array, offset: int, n: int, window_size: int | None = None) -> mx.array:
    """(rows, n, S) bool: queries at positions offset..offset+n-1 over S keys.

    A query sees real keys at or before it (and within `window_size` of it, for a sliding-window layer: the
    window as mlx-lm's `create_causal_mask` counts it). Left padding shifts every position of a row alike, so the
    window counts the same tokens as in the unpadded sequence. A padding query also sees itself, so no softmax row
    is empty.
    """
    S = key_valid.shape[1]
    q = mx.arange(offset, offset + n)[:, None]
    k = mx.arange(S)[None]
    allowed = k <= q
    if window_size is not None:
        allowed = allowed & (q - k < window_size)
    return (allowed[None] & key_valid[:, None, :]) | (k == q)[None]


class MaskedCache:
    """A per-layer KV cache that grows by concatenation and answers mlx-lm's `make_mask` with our mask.

    Relies on: mlx-lm's layers build their attention mask with `create_attention_mask(h, cache)`, which calls
    `cache.make_mask(n, return_array=..., window_size=...)` when the cache has one, and they store keys and
    values through `cache.update_and_fetch(keys, values)` and read the rotary position from `cache.offset`.
    The mask is built per call from which key positions hold real tokens, so each layer gets the mask it asks
    for: causal, and limited to its sliding window when the layer passes `window_size`.
    """

    def __init__(
        self, key_valid: mx.array, mask_dims: int, keys: mx.array | None = None, values: mx.array | None = None
    ):
        self.key_valid = key_valid  # (n, S): real tokens among the keys this cache will hold
        self.mask_dims = mask_dims  # one of MASK_LAYOUTS
        self._prefix = (keys, values)  # the prompt's keys and values under a completion pass
        self.keys, self.values = keys, values
        # The position of this pass's first token (rotary offset, mask rows). It stays put after the
        # update: gradient checkpointing runs a block's forward again, which must see the same cache.
        self.offset = 0 if keys is None else keys.shape[2]

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        mask = attention_mask(self.key_valid, self.offset, n, window_size)
        return mask[:, None, None] if self.mask_dims == 5 else mask[:, None]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """The prefix plus this pass's keys and values: the same result however often a block runs."""
        prefix_keys, prefix_values = self._prefix
        if prefix_keys is not None:
            keys = mx.concatenate([prefix_keys, keys], axis=2)
            values = mx.concatenate([prefix_values, values], axis=2)
        self.keys, self.values = keys, values
        return keys, values


def segment_mask(segments: mx.array, window_size: int | None = None) -> mx.array:
    """(rows, T, T) bool for rows holding several sequences side by side (`segments`: (rows, T), which sequence
    each position belongs to): a query sees the keys of its own sequence at or before it (within `window_size`
    of it for a sliding-window layer), so each sequence is computed as if it were alone in its row."""
    T = segments.shape[1]
    q = mx.arange(T)[:, None]
    k = mx.arange(T)[None]
    allowed = k <= q
    if window_size is not None:
        allowed = allowed & (q - k < window_size)
    return (allowed[None] & (segments[:, :, None] == segments[:, None, :])) | (k == q)[None]


class SegmentCache:
    """A per-layer stand-in cache for one pass over packed rows: it answers `make_mask` with `segment_mask`.

    Relies on: what MaskedCache relies on. Rotary positions do not restart per sequence (mlx-lm takes one offset
    per call); rotary attention sees only position differences, which packing keeps. A model whose positions
    matter otherwise (learned position embeddings, a rotary scaling chosen by length, a recurrent layer that
    carries state across the row) fails the self-check and runs unpacked (training/fast_path.py).
    """

    offset = 0

    def __init__(self, segments: mx.array, mask_dims: int):
        self.segments = segments
        self.mask_dims = mask_dims  # one of MASK_LAYOUTS
        self.keys = self.values = None

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        mask = segment_mask(self.segments, window_size)
        return mask[:, None, None] if self.mask_dims == 5 else mask[:, None]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.keys, self.values = keys, values
        return keys, values


# --- loading ------------------------------------------------------------------------------------------------------


def architecture_known(config: dict) -> bool:
    """Whether mlx-lm can build the model a config.json describes.

    Relies on: the private `mlx_lm.utils._get_classes(config)`, mlx-lm's own lookup of `model_type` (with its
    remappings), which raises ValueError for an unknown one; better than a copy of its list, which would go stale.
    """
    from mlx_lm.utils import _get_classes

    try:
        _get_classes(config)
    except ValueError:
        return False
    return True


# Relies on: the wording of mlx's `Module.load_weights(strict=True)` errors (mlx 0.32) for weights that do not fit
# the model the config builds. Text that no longer matches falls back to the error's first line (models/load.py).
_SHAPE = re.compile(r"Expected shape \(([^)]*)\) but received shape \(([^)]*)\) for parameter (\S+)")
_MISSING = re.compile(r"Missing (\d+) parameters?:\s*([^\s,]+)")
_EXTRA = re.compile(r"Received (\d+) parameters? not in model:\s*([^\s,]+)")


def weights_mismatch(text: str) -> tuple[str, ...] | None:
    """What an mlx weights error says: ("shape", expected, found, name), ("missing", count, name),
    ("extra", count, name), or None when the text is none of these."""
    shape, missing, extra = _SHAPE.search(text), _MISSING.search(text), _EXTRA.search(text)
    if shape:
        return ("shape", *shape.groups())
    if missing:
        return ("missing", *missing.groups())
    if extra:
        return ("extra", *extra.groups())
    return None


# --- generation ---------------------------------------------------------------------------------------------------

Generated = list[tuple[list[int], bool]]  # per sequence: its token ids (stop token excluded), whether it finished


def _batch_generator(model: Any, stop_tokens: list[int], sampler: Any, batch_size: int) -> Any:
    """mlx-lm's BatchGenerator as both sampling paths drive it: each stop token a sequence of one, `batch_size`
    sequences prefilled and decoded together."""
    from mlx_lm.generate import BatchGenerator

    return BatchGenerator(
        model,
        stop_tokens=[[t] for t in stop_tokens],
        sampler=sampler,
        completion_batch_size=batch_size,
        prefill_batch_size=batch_size,
    )


def generate_batched(
    model: nn.Module,
    prompts: list[list[int]],
    *,
    max_tokens: int,
    stop_tokens: list[int],
    sampler: Callable,
    batch_size: int,
) -> Generated:
    """Each prompt's answer as token ids and whether it finished, `batch_size` sequences in flight.

    Relies on: `mlx_lm.generate.BatchGenerator` (what `batch_generate` runs; not documented on its own):
    `insert(prompts, max_tokens)` -> uids, `next_generated()` -> responses with `uid`, `token` and
    `finish_reason` ("stop" for a stop token, "length" at max tokens, None while running), `close()`.
    `batch_generate` itself drops the finish reasons, which say whether an answer finished.
    """
    gen = _batch_generator(model, stop_tokens, sampler, batch_size)
    try:
        uids = gen.insert(prompts, [max_tokens] * len(prompts))
        ids: dict[int, list[int]] = {uid: [] for uid in uids}
        finished: dict[int, bool] = {}
        while responses := gen.next_generated():
            for r in responses:
                if r.finish_reason != "stop":  # the end-of-turn token is not part of the answer's text
                    ids[r.uid].append(r.token)
                if r.finish_reason is not None:
                    finished[r.uid] = r.finish_reason == "stop"
    finally:
        gen.close()
    return [(ids[uid], finished[uid]) for uid in uids]


@dataclass
class Sampled:
    """One generated answer: its token ids (stop token excluded), whether it finished (sampled a stop token rather
    than reaching max tokens), which stop token (where known), and each generated token's log-prob under the
    untempered logits, the stop token's last (where kept)."""

    ids: list[int]
    finished: bool = False
    stop: int | None = None
    logps: list[float] | None = None
    done: bool = field(default=False, repr=False, compare=False)  # generation over (generate_shared's count)


def _prefilled(model: nn.Module, prompt: list[int], step: int = 2048) -> list[Any]:
    """mlx-lm's per-layer caches holding `prompt` but its last token (the first decode step feeds that one)."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    for start in range(0, len(prompt) - 1, step):
        model(mx.array(prompt[start : min(start + step, len(prompt) - 1)])[None], cache=cache)
        mx.eval([c.state for c in cache])
    return cache


def generate_shared(
    model: nn.Module,
    prompts: list[list[int]],
    n: int,
    *,
    max_tokens: int,
    stop_tokens: list[int],
    sampler: Callable,
    batch_size: int,
    logps: bool = False,
) -> list[list[Sampled]]:
    """`n` answers to each prompt, each prompt prefilled once and its KV cache copied to its `n` sequences;
    `batch_size` sequences in flight, each leaving the batch as it stops. `logps`: keep each token's log-prob.

    Prompts are prefilled as places come free (at most twice `batch_size` sequences waiting or running), so the
    caches held at once stay bounded however many prompts there are.

    Relies on: `BatchGenerator.insert(prompts, max_tokens, caches=...)` taking a per-sequence list of layer caches
    that already hold the prompt (it merges them with their `merge`, left-padding shorter ones) and accepting
    inserts while it runs; the responses' `logprobs`: the step's log-softmax of the untempered logits (no logits
    processors here), from which the sampler drew `token`. Checked on each model before use (online/sampling.py).
    """
    gen = _batch_generator(model, stop_tokens, sampler, batch_size)
    out: dict[int, Sampled] = {}
    uids: list[int] = []
    waiting = iter(prompts)

    def top_up() -> None:
        while len(out) - sum(a.done for a in out.values()) < 2 * batch_size and (prompt := next(waiting, None)):
            cache = _prefilled(model, prompt)
            # The cache holds every prompt token but the last, so a sequence's "prompt" is that one token.
            new = gen.insert([prompt[-1:]] * n, [max_tokens] * n, caches=[copy.deepcopy(cache) for _ in range(n)])
            out.update({uid: Sampled([], logps=[] if logps else None) for uid in new})
            uids.extend(new)

    try:
        top_up()
        while responses := gen.next_generated():
            if logps:  # one evaluation per step for every sequence's sampled-token log-prob
                values = mx.stack([r.logprobs[r.token] for r in responses]).tolist()
            for i, r in enumerate(responses):
                answer = out[r.uid]
                if r.finish_reason == "stop":
                    answer.finished, answer.stop = True, r.token
                else:
                    answer.ids.append(r.token)
                if logps:
                    answer.logps.append(values[i])
                answer.done = r.finish_reason is not None
            top_up()
    finally:
        gen.close()
    return [[out[uids[i * n + j]] for j in range(n)] for i in range(len(prompts))]


def streaming_decode(tokenizer: Any, ids: list[int]) -> str:
    """Token ids to text as mlx-lm's streaming generation decodes them.

    Relies on: `TokenizerWrapper.detokenizer` with `reset()`, `add_token(id)`, `finalize()` and `.text`, the
    detokenizer `stream_generate` uses (it drops the space a BPE answer's first token starts with, which
    `tokenizer.decode` keeps: a batched answer and a streamed one must compare equal).
    """
    detokenizer = tokenizer.detokenizer
    detokenizer.reset()
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    return detokenizer.text


# --- adapters, training, export ---------------------------------------------------------------------------------


def lora_base_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, the base layer inside it) for every LoRA/DoRA layer of `model`.

    Relies on: mlx-lm's LoRALinear, LoRASwitchLinear and DoRALinear keep the frozen base layer as `.linear`,
    LoRAEmbedding and DoRAEmbedding as `.embedding` (mlx_lm.tuner.lora / dora).
    """
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    embeddings, linears = (LoRAEmbedding, DoRAEmbedding), (LoRALinear, LoRASwitchLinear, DoRALinear)
    return [
        (name, m.embedding if isinstance(m, embeddings) else m.linear)
        for name, m in model.named_modules()
        if isinstance(m, embeddings + linears)
    ]


def fused_lora_layers(model: nn.Module, *, dequantize: bool) -> list[tuple[str, nn.Module]]:
    """(module path, its base layer with the update folded in) for every LoRA/DoRA layer of `model`.

    Relies on: mlx-lm's adapter layers have `lora_a` and a `fuse(dequantize=...)` that returns the plain (or
    re-quantized) layer, as its own `mlx_lm.fuse` uses them.
    """
    return [
        (name, module.fuse(dequantize=dequantize))
        for name, module in model.named_modules()
        if hasattr(module, "lora_a") and callable(getattr(module, "fuse", None))
    ]


def checkpoint_layers(model: nn.Module) -> None:
    """Recompute each transformer block's activations in the backward pass (gradient checkpointing).

    Relies on: `mlx_lm.tuner.trainer.grad_checkpoint(layer)`, which replaces `type(layer).__call__`: every block
    of that class, in every model of the process, is checkpointed from then on (harmless for inference; the
    same numbers, more compute).
    """
    from mlx_lm.tuner.trainer import grad_checkpoint

    grad_checkpoint(model.layers[0])


def shards(weights: dict[str, mx.array], max_file_size_gb: float) -> list[dict[str, mx.array]]:
    """Weights split into safetensors shards of at most `max_file_size_gb`, in order.

    Relies on: `mlx_lm.utils.make_shards(weights, max_file_size_gb=...)`, mlx-lm's own splitting (undocumented).
    """
    from mlx_lm.utils import make_shards

    return make_shards(weights, max_file_size_gb=max_file_size_gb)
