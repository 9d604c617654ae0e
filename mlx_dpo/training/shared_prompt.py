"""Chosen and rejected on top of one prompt pass: the prompt runs once per pair, not twice.

Prompts are left-padded so every prompt's last real token sits at the same position; their keys
and values are cached per layer, repeated for the two completions, and both completions run on
top of them (gradients flow back through both uses). Left padding only shifts absolute
positions, which rotary attention does not see (it depends on position differences); the
padding itself is masked out of attention.

The model is driven through mlx-lm's own forward: our cache objects answer `make_mask`, which
mlx-lm models call to build each layer's attention mask, with a padding-aware mask built for that
call — limited to the layer's window when a sliding-window layer (gemma3, mistral-style layer types)
asks with `window_size`. A model this forward still gets wrong (a mask kind or position scheme it
does not know) is caught by the self-check (fast_path.py), which then runs two full sequences instead.
The batch itself is packed on the host by batching.py (`make_shared_prompt_batch`), which also
says which models can run this forward (`supports_shared_prompt`).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.training.batching import SharedPromptBatch


# How many axes the attention mask has. mlx-lm's attention takes (n, 1, queries, keys); a few families
# (gemma2 with grouped-query heads) split the heads into (kv heads, repeats) themselves and need
# (n, 1, 1, queries, keys). The self-check (fast_path.py) finds which one a model takes and sets it.
MASK_DIMS_ATTR = "_mlx_dpo_mask_dims"


class _MaskedCache:
    """A per-layer KV cache that grows by concatenation and answers mlx-lm's `make_mask` with our mask.

    The mask is built per call from which key positions hold real tokens, so each layer gets the mask
    it asks for: causal, and limited to its sliding window when the layer passes `window_size`.
    """

    def __init__(self, key_valid: mx.array, mask_dims: int, keys: mx.array | None = None,
                 values: mx.array | None = None):
        self.key_valid = key_valid  # (n, S): real tokens among the keys this cache will hold
        self.mask_dims = mask_dims
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


def attention_mask(key_valid: mx.array, offset: int, n: int, window_size: int | None = None) -> mx.array:
    """(rows, n, S) bool: queries at positions offset..offset+n-1 over S keys.

    A query sees real keys at or before it (and within `window_size` of it, for a sliding-window layer).
    Left padding shifts every position of a row alike, so the window counts the same tokens as in the
    unpadded sequence. A padding query also sees itself, so no softmax row is empty.
    """
    S = key_valid.shape[1]
    q = mx.arange(offset, offset + n)[:, None]
    k = mx.arange(S)[None]
    allowed = k <= q
    if window_size is not None:
        allowed = allowed & (q - k < window_size)
    return (allowed[None] & key_valid[:, None, :]) | (k == q)[None]


def forward(model: nn.Module, batch: SharedPromptBatch) -> tuple[mx.array, mx.array]:
    """Final hidden states of the prompts (B, P, D) and of the completions (2B, C, D)."""
    inner = model.model
    layers = len(inner.layers)
    dims = getattr(model, MASK_DIMS_ATTR, 4)
    caches = [_MaskedCache(batch.prompt_mask, dims) for _ in range(layers)]
    prompt_hidden = inner(batch.prompts, cache=caches)  # (B, P, D)
    valid2 = mx.concatenate([batch.prompt_mask, batch.prompt_mask], axis=0)
    # Completion keys are all "real": causality keeps a real token from seeing the padding after it.
    key_valid = mx.concatenate([valid2, mx.ones(batch.completions.shape, dtype=mx.bool_)], axis=1)
    shared = [
        _MaskedCache(key_valid, dims, mx.concatenate([c.keys, c.keys], axis=0),
                     mx.concatenate([c.values, c.values], axis=0))
        for c in caches
    ]
    return prompt_hidden, inner(batch.completions, cache=shared)


def predicting_states(prompt_hidden: mx.array, comp_hidden: mx.array) -> mx.array:
    """(2B, C, D): the states whose next-token predictions are the completion tokens.

    The last prompt position predicts each completion's first token; completion position k, token k+1.
    """
    last = prompt_hidden[:, -1:, :]
    return mx.concatenate([mx.concatenate([last, last], axis=0), comp_hidden[:, :-1, :]], axis=1)

