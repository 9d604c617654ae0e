"""How far each log-prob path is from the model's own forward, per mlx-lm family (tiny random models). JSON.

    .venv/bin/python benchmarks/family_logprobs.py

For every family of tests/family_models.py: the worst |error| in nats per sequence of each path (two full
sequences or shared prompt, x full logits or completion-only head) against log-softmax of the model's own
`model(inputs)` on two pairs of different lengths, after the self-check (mlx_dpo/training/fast_path.py) has
looked at the model. The figures in issue 12's note came from this script (before: on commit 25a194d).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import mlx_dpo.blas  # noqa: E402,F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from family_models import FAMILIES, make_family_model  # noqa: E402

from mlx_dpo.training import fast_path, logprobs  # noqa: E402
from mlx_dpo.training.batching import BatchLayout, make_pair_batch  # noqa: E402
from mlx_dpo.training.tokens import EncodedPair  # noqa: E402

PATHS = {
    "sequences+full": (BatchLayout.SEQUENCES, True),
    "sequences+head": (BatchLayout.SEQUENCES, False),
    "shared+full": (BatchLayout.SHARED_PROMPT, True),
    "shared+head": (BatchLayout.SHARED_PROMPT, False),
}


def probe_pairs(vocab: int) -> list[EncodedPair]:
    rng = np.random.default_rng(0)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(int(t) for t in rng.integers(3, vocab, n))

    return [EncodedPair("a", ids(4), ids(9), ids(5)), EncodedPair("b", ids(11), ids(6), ids(10))]


def own_logps(model, pairs: list[EncodedPair]) -> np.ndarray:
    """Summed completion log-probs from the model's own forward, one unpadded sequence at a time."""
    out = []
    for prompt, completion in [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]:
        x = mx.array([list(prompt) + list(completion)])
        logits = model(x[:, :-1]).astype(mx.float32)
        logp = (logits - mx.logsumexp(logits, axis=-1, keepdims=True))[0]
        out.append(sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(completion)))
    return np.array(out)


def main() -> None:
    rows = {}
    for family in FAMILIES:
        model = make_family_model(family)
        found = fast_path.fast_paths(model)  # the self-check: picks the mask layout a family takes (found.mask_dims)
        pairs = probe_pairs(model.model.embed_tokens.weight.shape[0])
        want = own_logps(model, pairs)
        row = {}
        for name, (layout, full) in PATHS.items():
            try:
                got = np.array(
                    logprobs.completion_logps(
                        model, make_pair_batch(pairs, layout), full_logits=full, mask_dims=found.mask_dims
                    )
                )
                row[name] = float(np.abs(got - want).max())
            except Exception as e:  # a path that cannot run on this family
                row[name] = f"{type(e).__name__}: {str(e)[:80]}"
        row["self_check"] = {"head": found.head_problem or "ok", "shared_prompt": found.shared_problem or "ok"}
        rows[family] = row
        print(json.dumps({family: row}), flush=True)
    print(
        json.dumps(
            {
                "benchmark": "family_logprobs",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.system()} {platform.machine()}",
                "families": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
