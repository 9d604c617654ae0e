"""Batched sampling (`mlx_dpo.online.sampling.sample_answers`): many prompts' answers at once with mlx-lm's
batch_generate, equal to one-prompt-at-a-time generation where decoding is greedy, reproducible by seed."""

import re

import pytest
from helpers import user
from mlx_lm import stream_generate

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.generate import SampleSettings, answer, decode_answer, prompt_tokens
from mlx_dpo.models.load import load_model
from mlx_dpo.online import sampling
from mlx_dpo.online.sampling import RETRIES, batching_probe, batching_problem, sample_answers

# Prompts of very different lengths, so the batch pads the short ones a lot.
PROMPTS = [
    [user("Hi")],
    [user("What is the capital of France? Answer in one word, please, and then stop.")],
    [user("Write a haiku about the sea.")],
    [user("2+2?")],
    [user("Name three colours of the rainbow.")],
]


def test_the_app_and_the_library_share_one_sample_settings_class():
    from tui.workers import SampleSettings as AppSettings

    assert AppSettings is SampleSettings


def test_greedy_batched_answers_equal_single_prompt_answers_padding_does_not_leak(tiny_loaded):
    assert batching_problem(tiny_loaded) is None  # the probe passes: batches are used below
    settings = SampleSettings(temperature=0.0, max_tokens=10)
    model, tokenizer = tiny_loaded.model, tiny_loaded.tokenizer
    single_ids = [
        [
            r.token
            for r in stream_generate(model, tokenizer, prompt_tokens(tokenizer, p), max_tokens=10)
            if r.finish_reason != "stop"
        ]
        for p in PROMPTS
    ]
    single = [answer(tiny_loaded, p, max_tokens=10, temperature=0.0) for p in PROMPTS]
    for batch_size in (1, 4):
        samples = sample_answers(tiny_loaded, PROMPTS, settings, n=1, batch_size=batch_size)
        assert [group[0] for group in samples.answers] == single
        assert samples.tokens == sum(len(ids) for ids in single_ids)
        assert samples.seconds > 0


def test_greedy_batched_answers_equal_single_prompt_answers_on_the_default_model(default_model):
    # The self-check sample_answers runs on every model: two prompts of different lengths, greedy, batched
    # together and one at a time (mlx-lm's stream_generate, the app's path).
    batched, single = batching_probe(default_model, max_tokens=5)
    assert batched == single
    assert [finished for _ids, finished in batched] == [False, False]  # cut at 5 tokens: neither finished
    texts = [decode_answer(default_model.tokenizer, ids) for ids, _finished in batched]
    assert all(any(ch.isalpha() for ch in text) for text in texts), texts  # words, not padding garbage
    assert sampling.shared_prefill_problem(default_model) is None  # and so does the shared prefill's probe


def test_a_model_that_cannot_be_batched_samples_one_at_a_time_and_says_so(tiny, monkeypatch):
    loaded = load_model(str(tiny))  # its own model object: the probe's finding is kept on it

    def cannot_batch(*args, **kwargs):
        raise ValueError("<class 'OddCache'> does not yet support batching with history")

    monkeypatch.setattr(sampling, "_batched", cannot_batch)
    monkeypatch.setattr(sampling, "generate_shared", cannot_batch)
    assert "mlx-lm cannot batch it (ValueError: <class 'OddCache'>" in batching_problem(loaded)
    events = []
    settings = SampleSettings(temperature=0.0, max_tokens=6)
    samples = sample_answers(loaded, PROMPTS[:2], settings, n=1, on_event=events.append)
    assert [group[0] for group in samples.answers] == [
        answer(loaded, p, max_tokens=6, temperature=0.0) for p in PROMPTS[:2]
    ]
    assert [e.message for e in events] == [
        "sampling: each answer prefills its prompt (mlx-lm cannot batch its prefilled caches (ValueError: <class "
        "'OddCache'> does not yet support batching with history))",
        f"sampling one answer at a time: {batching_problem(loaded)}",
    ]


def test_two_samples_of_a_prompt_are_different_draws_and_a_seed_reproduces_them(tiny_loaded):
    settings = SampleSettings(temperature=1.0, max_tokens=8)
    first = sample_answers(tiny_loaded, PROMPTS[:3], settings, n=2, seed=3, batch_size=4)
    assert [len(group) for group in first.answers] == [2, 2, 2]
    assert all(a != b for a, b in first.answers)
    again = sample_answers(tiny_loaded, PROMPTS[:3], settings, n=2, seed=3, batch_size=4)
    assert again.answers == first.answers
    other = sample_answers(tiny_loaded, PROMPTS[:3], settings, n=2, seed=4, batch_size=4)
    assert other.answers != first.answers
    # The sampler's own seed (the app's --seed) changes the draws too.
    reseeded = sample_answers(tiny_loaded, PROMPTS[:3], settings.with_seed(9), n=2, seed=3, batch_size=4)
    assert reseeded.answers != first.answers


def test_identical_answers_are_drawn_again_and_every_draw_is_counted(tiny_loaded):
    # At a temperature this low the likeliest token always wins: the draws are greedy and cannot differ.
    near_greedy = SampleSettings(temperature=1e-4, max_tokens=6)
    greedy = sample_answers(tiny_loaded, PROMPTS[:2], SampleSettings(temperature=0.0, max_tokens=6), n=1)
    samples = sample_answers(tiny_loaded, PROMPTS[:2], near_greedy, n=2)
    assert samples.answers == [[g[0], g[0]] for g in greedy.answers]  # still identical: the caller decides
    assert samples.tokens == (2 + RETRIES) * greedy.tokens  # two answers, then the second redrawn RETRIES times


@pytest.mark.parametrize(
    "settings, n, prompts, fragment",
    [
        (SampleSettings(temperature=0.0), 2, PROMPTS[:1], "temperature 0"),
        (SampleSettings(top_p=0.0), 2, PROMPTS[:1], "top-p"),
        (SampleSettings(), 0, PROMPTS[:1], "samples per prompt"),
        (SampleSettings(), 2, [[{"role": "assistant", "content": "hi"}]], "prompt 1"),
    ],
)
def test_bad_sampling_requests_are_one_line_errors(tiny_loaded, settings, n, prompts, fragment):
    with pytest.raises(MlxDpoError, match=re.escape(fragment)):
        sample_answers(tiny_loaded, prompts, settings, n=n)


def test_a_shared_prefill_gives_every_answer_the_tokens_of_one_at_a_time_greedy_decoding(tiny_loaded):
    # Each prompt is prefilled once and its cache copied to its answers (compat.generate_shared); prompts of very
    # different lengths are merged into one batch, so left padding of the copied caches is exercised too.
    settings = SampleSettings(temperature=0.0, max_tokens=10)
    tokens = [prompt_tokens(tiny_loaded.tokenizer, p) for p in PROMPTS]
    single = sampling._one_at_a_time(tiny_loaded, tokens, settings)
    for batch_size in (3, 16):  # sequences waiting for a place, and all in flight at once
        shared = sampling._shared(tiny_loaded, tokens, settings, 2, batch_size)
        assert [[(a.ids, a.finished) for a in group] for group in shared] == [[one, one] for one in single]
    assert sampling.shared_prefill_problem(tiny_loaded) is None


def test_a_model_whose_shared_prefill_differs_prefills_every_answer_and_says_so(tiny, monkeypatch):
    loaded = load_model(str(tiny))
    real = sampling._shared

    def off_by_one(loaded, tokens, settings, n, batch_size, logps=False):  # a stand-in for a cache that merges wrongly
        out = real(loaded, tokens, settings, n, batch_size, logps)
        for group in out:
            group[-1].ids[-1] += 1
        return out

    monkeypatch.setattr(sampling, "_shared", off_by_one)
    events = []
    greedy = SampleSettings(temperature=0.0, max_tokens=6)
    samples = sample_answers(loaded, PROMPTS[:2], greedy, n=1, on_event=events.append)
    assert [e.message for e in events] == [
        "sampling: each answer prefills its prompt (its answers differ from one-at-a-time ones on a probe)"
    ]
    assert [group[0] for group in samples.answers] == [
        answer(loaded, p, max_tokens=6, temperature=0.0) for p in PROMPTS[:2]
    ]
