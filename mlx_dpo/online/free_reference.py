"""A free reference pass: when the model that sampled a round's answers is that round's reference, the log-probs
sampling computed are the reference log-probs, and they go into the reference cache instead of a second pass.

The round's reference is the base (`--reference base`, the default) or the last kept version (`--reference
previous`); the sampler is the last kept version, or the base before any. So the sampler is the reference in the
first round, and in every round with `--reference previous` (`sampler_is_reference`).

Each kept value must be what the reference pass would compute, under the key the pass looks up:
- the value: each sampled token's log-prob from the untempered logits (no temperature, no top-p), summed; the stop
  token's too when the answer finished (a finished completion ends with its end-of-turn token). Checked once per
  model (`problem`, kept in `ModelSession.checks`): the per-token values of one sampled answer must equal log-softmax
  of the model's own forward over prompt + answer within the log-prob self-check's tolerance
  (training/fast_path.py), else nothing is kept, the pass runs as before, and one Status line says why;
- the key: the reference cache is keyed by the exact prompt and completion token ids (training/ref_cache.py), so
  each answer's text is rendered again as training renders it (training/tokens.py's Encoder) and kept only when
  those ids are the ids that were sampled (an answer whose text re-tokenizes differently gets the pass);
- the fingerprint: the sampler's own (weights, tokenizer, the adapter's weights when one is on: run.model_fingerprint),
  computed while its adapter is on, which is the fingerprint the round's reference pass opens.
A pair the cache then holds both answers of needs no reference pass (training/reference.py counts it as hits).
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx

from mlx_dpo.compat import Sampled
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Status
from mlx_dpo.models.adapter import adapter_weights
from mlx_dpo.models.session import ModelSession
from mlx_dpo.online.sampling import Samples
from mlx_dpo.training.fast_path import TOLERANCE_FP32
from mlx_dpo.training.ref_cache import RefCache, arrays_digest
from mlx_dpo.training.run import model_fingerprint
from mlx_dpo.training.tokens import Encoder


def sampler_is_reference(sampled_from_base: bool, reference: str) -> bool:
    """Whether this round's reference (settings' `reference`: base or previous) is the model that sampled it."""
    return sampled_from_base or reference == "previous"


def _completion(sampled: Sampled) -> list[int]:
    return sampled.ids + ([sampled.stop] if sampled.finished else [])


def _forward_logps(loaded: ModelSession, prompt: list[int], completion: list[int]) -> list[float]:
    """Each completion token's log-prob by the model's own forward (the ground truth the self-checks use)."""
    inputs = mx.array(prompt + completion[:-1])[None]
    logits = loaded.model(inputs)[0, len(prompt) - 1 :].astype(mx.float32)
    logps = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return mx.take_along_axis(logps, mx.array(completion)[:, None], axis=-1)[:, 0].tolist()


def problem(loaded: ModelSession, probe: list[tuple[list[int], Sampled]]) -> str | None:
    """Why sampled log-probs are not kept as reference log-probs on this model (None: the probe's answers' per-token
    values, stop token included, equal the model's forward within tolerance). Measured once per model session."""
    if loaded.checks.unchecked("free_reference"):
        try:
            worst = max(
                abs(a - b)
                for prompt, sampled in probe
                for a, b in zip(_forward_logps(loaded, prompt, _completion(sampled)), sampled.logps)
            )
            found = (
                None
                if worst <= TOLERANCE_FP32
                else f"sampled log-probs differ from the model's forward by {worst:.3g} per token"
            )
        except Exception as e:  # a forward this check cannot run means: not this path
            found = f"cannot be checked on this model ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        loaded.checks.free_reference = found
    return loaded.checks.free_reference


def _fingerprint(loaded: ModelSession) -> str:
    """The reference cache's name for the model as it sampled (its adapter's weights included, as run.py names it)."""
    digest = arrays_digest(adapter_weights(loaded.model)) if loaded.adapter_path is not None else None
    return model_fingerprint(loaded, digest)


def keep(
    loaded: ModelSession,
    prompts: list[list[dict]],
    samples: Samples,
    on_event: Callable[[Event], None] = lambda e: None,
    cache: RefCache | None = None,
) -> int:
    """Store the sampled answers' log-probs as the sampler's reference log-probs; returns how many were stored.
    Call it with the sampler's adapter still on. Nothing is stored when the self-check fails (one Status line)."""
    if samples.sampled is None or samples.prompt_ids is None:
        return 0
    answers = [(i, j) for i, group in enumerate(samples.sampled) for j, a in enumerate(group) if _completion(a)]
    if not answers:
        return 0
    # The probe: the first answer, and the first one that finished (its stop token's log-prob is checked too).
    finished = [(i, j) for i, j in answers if samples.sampled[i][j].finished][:1]
    probe = [(samples.prompt_ids[i], samples.sampled[i][j]) for i, j in dict.fromkeys(answers[:1] + finished)]
    why = problem(loaded, probe)
    if why:
        on_event(Status(f"reference pass: runs on the sampled answers ({why})"))
        return 0
    encoder, rows = Encoder(loaded.tokenizer), []
    for i, j in answers:
        text, sampled = samples.answers[i][j], samples.sampled[i][j]
        try:
            encoded = encoder.encode(PreferencePair("sampled", prompts[i], text, text))
        except MlxDpoError:
            continue  # training cannot render it either: nothing to keep
        completion = _completion(sampled)
        if list(encoded.prompt) == samples.prompt_ids[i] and list(encoded.chosen) == completion:
            rows.append((encoded.prompt, encoded.chosen, sum(sampled.logps)))
    own = cache is None
    cache = RefCache(_fingerprint(loaded)) if own else cache
    try:
        cache.store(rows)
    finally:
        if own:
            cache.close()
    on_event(
        Status(
            f"reference pass: {len(rows)} of {len(answers)} sampled answers' log-probs kept from sampling"
            + ("" if len(rows) == len(answers) else " (the others re-tokenize differently)")
        )
    )
    return len(rows)
