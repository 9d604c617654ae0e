"""The free reference pass (mlx_dpo.online.free_reference): sampled log-probs kept as the reference's, equal to what
the reference pass computes for the same token ids, and refused (the pass runs) on a model where they are not."""

from helpers import user

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.models.load import load_model
from mlx_dpo.online import free_reference, sampling
from mlx_dpo.online.sampling import sample_answers
from mlx_dpo.training.fast_path import TOLERANCE_FP32
from mlx_dpo.training.ref_cache import RefCache
from mlx_dpo.training.reference import reference_logps
from mlx_dpo.training.tokens import Encoder

PROMPTS = [[user("Hi")], [user("Write a haiku about the sea.")], [user("Name three colours of the rainbow.")]]
SETTINGS = SampleSettings(temperature=0.8, max_tokens=6)


def _pairs(loaded, answers) -> list:
    """Every sampled answer as an encoded pair (the answer as both completions), as training encodes it."""
    encoder = Encoder(loaded.tokenizer)
    return [
        encoder.encode(PreferencePair(f"{i}-{j}", PROMPTS[i], a, a))
        for i, group in enumerate(answers)
        for j, a in enumerate(group)
    ]


def test_kept_log_probs_equal_the_reference_pass_and_spare_it(tiny, tmp_path):
    loaded = load_model(str(tiny))
    samples = sample_answers(loaded, PROMPTS, SETTINGS, n=2, seed=1, keep_logps=True)
    assert all(len(a.logps) == len(a.ids) + a.finished for group in samples.sampled for a in group)
    free = RefCache("free", root=tmp_path / "free")
    events = []
    kept = free_reference.keep(loaded, PROMPTS, samples, events.append, cache=free)
    assert loaded.checks.free_reference is None  # the self-check passed on this model
    # A random model's tokens often re-tokenize differently from their text; those get the pass (the default model:
    # benchmarks/online_round.py counts them).
    assert kept >= 1 and events[-1].message.startswith(f"reference pass: {kept} of 6 sampled answers' log-probs")
    pairs = _pairs(loaded, samples.answers)
    computed, stats = reference_logps(
        loaded.model, pairs, RefCache("pass", root=tmp_path / "pass"), checks=loaded.checks
    )
    assert stats.misses == 12  # a fresh cache: the pass ran for every completion
    hits = 0
    for pair, value in zip(pairs, free.lookup((p.prompt, p.chosen) for p in pairs)):
        if value is not None:  # the answers kept: equal to the pass within the self-check's tolerance per token
            hits += 1
            assert abs(value - computed.values[pair][0]) <= TOLERANCE_FP32 * len(pair.chosen)
    assert hits == kept
    # With the free values in its cache, the pass computes nothing for the answers kept.
    _, stats = reference_logps(loaded.model, pairs, free, checks=loaded.checks)
    assert stats.hits == 2 * kept


def test_a_model_whose_sampled_log_probs_differ_gets_the_reference_pass(tiny, tmp_path, monkeypatch):
    loaded = load_model(str(tiny))
    real = sampling.generate_shared

    def perturbed(*args, **kwargs):  # a stand-in for a sampler whose log-probs are not the forward's
        out = real(*args, **kwargs)
        for group in out:
            for a in group:
                a.logps = [v + 0.01 for v in a.logps] if a.logps is not None else None
        return out

    monkeypatch.setattr(sampling, "generate_shared", perturbed)
    samples = sample_answers(loaded, PROMPTS, SETTINGS, n=2, seed=1, keep_logps=True)
    events, cache = [], RefCache("free", root=tmp_path)
    assert free_reference.keep(loaded, PROMPTS, samples, events.append, cache=cache) == 0
    assert [e.message for e in events] == [
        "reference pass: runs on the sampled answers (sampled log-probs differ "
        "from the model's forward by 0.01 per token)"
    ]
    pairs = _pairs(loaded, samples.answers)
    _, stats = reference_logps(loaded.model, pairs, cache, checks=loaded.checks)
    assert stats.hits == 0 and stats.misses == 12


def test_on_the_default_model_the_sampled_log_probs_pass_the_check_and_most_answers_are_kept(default_model, tmp_path):
    samples = sample_answers(
        default_model, PROMPTS[1:], SampleSettings(temperature=0.8, max_tokens=16), n=2, seed=1, keep_logps=True
    )
    kept = free_reference.keep(default_model, PROMPTS[1:], samples, cache=RefCache("free", root=tmp_path))
    assert default_model.checks.free_reference is None
    assert kept >= 2  # of 4: a real model's answers mostly re-tokenize to the ids it sampled


def test_held_out_samples_leave_their_own_log_probs_cached_for_the_kl_estimate(tiny, fresh_cache):
    from mlx_dpo.training import heldout, run

    loaded = load_model(str(tiny))
    answers = heldout.sample(loaded, None, PROMPTS, SETTINGS, 2)
    pairs = _pairs(loaded, answers)
    cached = RefCache(run.model_fingerprint(loaded)).lookup((p.prompt, p.chosen) for p in pairs)
    assert any(v is not None for v in cached)  # the answers that re-tokenize to their sampled ids
    computed, _ = reference_logps(
        loaded.model, pairs, RefCache("pass", root=fresh_cache / "pass"), checks=loaded.checks
    )
    for pair, value in zip(pairs, cached):
        if value is not None:
            assert abs(value - computed.values[pair][0]) <= TOLERANCE_FP32 * len(pair.chosen)


def test_a_finished_answers_stop_token_log_prob_is_the_one_it_was_drawn_from(tiny_loaded):
    from mlx_dpo.compat import generate_shared
    from mlx_dpo.models.generate import prompt_tokens, sampler_for

    prompt = prompt_tokens(tiny_loaded.tokenizer, PROMPTS[1])
    greedy = dict(max_tokens=6, sampler=sampler_for(0.0, 1.0), batch_size=2, logps=True)
    [[free]] = generate_shared(tiny_loaded.model, [prompt], 1, stop_tokens=[], **greedy)
    # The same answer, ended by declaring its last new token a stop token: that token's log-prob comes last.
    k = max(i for i, t in enumerate(free.ids) if t not in free.ids[:i])
    [[stopped]] = generate_shared(tiny_loaded.model, [prompt], 1, stop_tokens=[free.ids[k]], **greedy)
    assert (stopped.ids, stopped.finished, stopped.stop) == (free.ids[:k], True, free.ids[k])
    forward = free_reference._forward_logps(tiny_loaded, prompt, free.ids[: k + 1])
    assert len(stopped.logps) == k + 1
    assert max(abs(a - b) for a, b in zip(stopped.logps, forward)) <= TOLERANCE_FP32
