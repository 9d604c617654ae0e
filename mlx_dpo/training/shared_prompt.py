"""Chosen and rejected on top of one prompt pass: the prompt runs once per pair, not twice.

Prompts are left-padded so every prompt's last real token sits at the same position; their keys
and values are cached per layer, repeated for the two completions, and both completions run on
top of them (gradients flow back through both uses). Left padding only shifts absolute
positions, which rotary attention does not see (it depends on position differences); the
padding itself is masked out of attention.

The model is driven through mlx-lm's own forward: our cache objects answer `make_mask`, which
mlx-lm models call to build their attention mask, with the padding-aware mask.
The batch itself is packed on the host by batching.py (`make_shared_prompt_batch`), which also
says which models can run this forward (`supports_shared_prompt`).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.training.batching import SharedPromptBatch


class _MaskedCache:
    """A per-layer KV cache that grows by concatenation and hands mlx-lm our attention mask."""

    def __init__(self, mask: mx.array, keys: mx.array | None = None, values: mx.array | None = None):
        self._mask = mask
        self.keys, self.values = keys, values
        self.offset = 0 if keys is None else keys.shape[2]

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        return self._mask

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is not None:
            keys = mx.concatenate([self.keys, keys], axis=2)
            values = mx.concatenate([self.values, values], axis=2)
        self.keys, self.values, self.offset = keys, values, keys.shape[2]
        return keys, values


def _prompt_mask(valid: mx.array) -> mx.array:
    """(B, 1, P, P): causal over real prompt tokens; padding rows see themselves (no empty softmax)."""
    P = valid.shape[1]
    causal = mx.tril(mx.ones((P, P), dtype=mx.bool_))
    eye = mx.eye(P, dtype=mx.bool_)
    return ((causal[None] & valid[:, None, :]) | eye[None])[:, None]


def _completion_mask(valid: mx.array, C: int) -> mx.array:
    """(n, 1, C, P + C): real prompt tokens, then causal over the completion."""
    n, P = valid.shape
    prompt_part = mx.broadcast_to(valid[:, None, :], (n, C, P))
    causal = mx.broadcast_to(mx.tril(mx.ones((C, C), dtype=mx.bool_))[None], (n, C, C))
    return mx.concatenate([prompt_part, causal], axis=2)[:, None]


def forward(model: nn.Module, batch: SharedPromptBatch) -> tuple[mx.array, mx.array]:
    """Final hidden states of the prompts (B, P, D) and of the completions (2B, C, D)."""
    inner = model.model
    layers = len(inner.layers)
    caches = [_MaskedCache(_prompt_mask(batch.prompt_mask)) for _ in range(layers)]
    prompt_hidden = inner(batch.prompts, cache=caches)  # (B, P, D)
    valid2 = mx.concatenate([batch.prompt_mask, batch.prompt_mask], axis=0)
    C = batch.completions.shape[1]
    cmask = _completion_mask(valid2, C)
    shared = [
        _MaskedCache(cmask, mx.concatenate([c.keys, c.keys], axis=0), mx.concatenate([c.values, c.values], axis=0))
        for c in caches
    ]
    return prompt_hidden, inner(batch.completions, cache=shared)


def predicting_states(prompt_hidden: mx.array, comp_hidden: mx.array) -> mx.array:
    """(2B, C, D): the states whose next-token predictions are the completion tokens.

    The last prompt position predicts each completion's first token; completion position k, token k+1.
    """
    last = prompt_hidden[:, -1:, :]
    return mx.concatenate([mx.concatenate([last, last], axis=0), comp_hidden[:, :-1, :]], axis=1)

