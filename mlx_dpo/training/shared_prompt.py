"""Chosen and rejected on top of one prompt pass: the prompt runs once per pair, not twice.

Prompts are left-padded so every prompt's last real token sits at the same position; their keys
and values are cached per layer, repeated for the two completions, and both completions run on
top of them (gradients flow back through both uses). Left padding only shifts absolute
positions, which rotary attention does not see (it depends on position differences); the
padding itself is masked out of attention.

The model is driven through mlx-lm's own forward: our cache objects (`compat.MaskedCache`) answer `make_mask`,
which mlx-lm models call to build each layer's attention mask, with a padding-aware mask built for that
call — limited to the layer's window when a sliding-window layer (gemma3, mistral-style layer types)
asks with `window_size`. A model this forward still gets wrong (a mask kind or position scheme it
does not know) is caught by the self-check (fast_path.py), which then runs two full sequences instead.
The batch itself is packed on the host by batching.py (`make_shared_prompt_batch`), which also
says which models can run this forward (`supports_shared_prompt`).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.compat import MASK_LAYOUTS, MaskedCache  # mlx-lm's cache and mask protocol (what it relies on: compat.py)
from mlx_dpo.training.batching import SharedPromptBatch

__all__ = ["MASK_LAYOUTS", "forward", "predicting_states"]


def forward(model: nn.Module, batch: SharedPromptBatch, mask_dims: int = 4) -> tuple[mx.array, mx.array]:
    """Final hidden states of the prompts (B, P, D) and of the completions (2B, C, D); `mask_dims`: one of
    MASK_LAYOUTS, the one the self-check found for the model."""
    inner = model.model
    layers = len(inner.layers)
    caches = [MaskedCache(batch.prompt_mask, mask_dims) for _ in range(layers)]
    prompt_hidden = inner(batch.prompts, cache=caches)  # (B, P, D)
    valid2 = mx.concatenate([batch.prompt_mask, batch.prompt_mask], axis=0)
    # Completion keys are all "real": causality keeps a real token from seeing the padding after it.
    key_valid = mx.concatenate([valid2, mx.ones(batch.completions.shape, dtype=mx.bool_)], axis=1)
    shared = [
        MaskedCache(
            key_valid, mask_dims, mx.concatenate([c.keys, c.keys], axis=0), mx.concatenate([c.values, c.values], axis=0)
        )
        for c in caches
    ]
    return prompt_hidden, inner(batch.completions, cache=shared)


def predicting_states(prompt_hidden: mx.array, comp_hidden: mx.array) -> mx.array:
    """(2B, C, D): the states whose next-token predictions are the completion tokens.

    The last prompt position predicts each completion's first token; completion position k, token k+1.
    """
    last = prompt_hidden[:, -1:, :]
    return mx.concatenate([mx.concatenate([last, last], axis=0), comp_hidden[:, :-1, :]], axis=1)
