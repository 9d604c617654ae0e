"""Did a round help? Held-out numbers after each round (`mlx_dpo.training.heldout`), on a tiny model."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from mlx_dpo.data.pairs import DEMO_PAIRS_PATH, PreferencePair, load_pairs
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.models.load import load_model
from mlx_dpo.online.judges import load_judge
from mlx_dpo.online.verdict import Verdict
from mlx_dpo.settings import RoundSettings
from mlx_dpo.training import heldout, rounds, run
from mlx_dpo.training.tokens import Encoder

TINY_SEED = 31
# Every round measured and kept (the rule itself: tests/test_acceptance.py).
ROUND = dict(iters=1, batch_size=2, lora_rank=4, learning_rate=1e-2, seed=3, compile=False, accept="always")
SAMPLER = SampleSettings(temperature=1.0, max_tokens=6)


def add(workspace, pairs, split="train"):
    with PreferenceStore(workspace) as store:
        for p in pairs:
            store.add_pair(p.prompt, p.chosen, p.rejected, origin="imported", split=split)


def direct_logp(loaded, prompt, answer) -> float:
    """log p(answer | prompt) from the model's own full forward: every position, log-softmax, summed."""
    pair = Encoder(loaded.tokenizer).encode(PreferencePair("x", prompt, answer, answer))
    tokens = mx.array([list(pair.prompt) + list(pair.chosen)])
    logits = loaded.model(tokens[:, :-1]).astype(mx.float32)
    logps = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    picked = mx.take_along_axis(logps[0], tokens[0, 1:, None], axis=-1)[:, 0]
    return picked[len(pair.prompt) - 1 :].sum().item()


def test_two_rounds_measure_accuracy_kl_score_and_win_rates_and_keep_the_base_once(
    tmp_path, tiny, fresh_cache, monkeypatch
):
    ws = tmp_path / "ws"
    demo = load_pairs(DEMO_PAIRS_PATH).pairs
    add(ws, demo[:2])
    add(ws, demo[30:32], split="valid")
    (tmp_path / "judge.py").write_text("def short(prompt, answer):\n    return -len(answer.split())\n")
    judge = load_judge(f"{tmp_path / 'judge.py'}:short")
    loaded = load_model(str(tiny))
    sampled = []  # which version each held-out sampling ran on
    real = heldout.sample_answers
    monkeypatch.setattr(
        heldout, "sample_answers", lambda lm, *a, **k: sampled.append(lm.adapter_path) or real(lm, *a, **k)
    )

    r1 = rounds.run_round(ws, settings=ROUND, loaded=loaded, judge=judge, sample_settings=SAMPLER)
    m = r1.metrics
    assert set(heldout.KEYS) <= set(m) and sampled == [None, r1.adapter_path]  # the base, then v1
    assert (m["heldout_base/accuracy"], m["heldout_base/margin"], m["heldout_base/kl"]) == (0.5, 0.0, 0.0)  # itself
    with PreferenceStore(ws) as store:
        assert store.get_round(1).metrics == m  # the numbers are in the round's record
        valid = store.training_pairs("valid")
    prompts = [p.prompt for p in valid]  # no eval prompts given: the validation pairs' prompts
    kept = {
        label: heldout.kept_answers(json.loads((ws / "heldout" / f"{label}.json").read_text()))
        for label in ("base", "v1")
    }
    assert [len(a) for a in kept["v1"]] == [2, 2]
    assert m["heldout_base/score"] == pytest.approx(heldout.mean_score(judge, prompts, kept["base"]))
    assert m["heldout/score"] == pytest.approx(heldout.mean_score(judge, prompts, kept["v1"]))
    assert m["heldout/win_vs_base"] == m["heldout/win_vs_previous"]  # v1's previous version is the base
    assert loaded.adapter_path == r1.adapter_path  # the round leaves its (kept) version on
    scored = run.evaluate(valid, loaded=loaded, adapter_path=r1.adapter_path)
    assert m["heldout/accuracy"] == scored["accuracy"] and m["heldout/margin"] == pytest.approx(
        scored["margin"], rel=1e-4
    )
    # The KL: the mean over v1's samples of log pi_v1 - log pi_base, each from the model's own full forward.
    with_adapter = [direct_logp(loaded, p, a) for p, group in zip(prompts, kept["v1"]) for a in group]
    with loaded.base():
        without = [direct_logp(loaded, p, a) for p, group in zip(prompts, kept["v1"]) for a in group]
    expected = sum(w - b for w, b in zip(with_adapter, without)) / len(without)
    assert abs(expected) > 1e-3 and m["heldout/kl"] == pytest.approx(expected, rel=1e-3, abs=1e-4)

    add(ws, demo[2:4])
    sampled.clear()
    r2 = rounds.run_round(ws, settings=ROUND, loaded=loaded, judge=judge, sample_settings=SAMPLER)
    assert sampled == [r2.adapter_path]  # the base's and v1's answers are read back, not sampled again
    v2 = heldout.kept_answers(json.loads((ws / "heldout" / "v2.json").read_text()))
    assert r2.metrics["heldout/win_vs_previous"] == heldout.win_rate(judge, prompts, v2, kept["v1"])
    assert r2.metrics["heldout/win_vs_base"] == heldout.win_rate(judge, prompts, v2, kept["base"])
    assert r2.metrics["heldout_base/score"] == m["heldout_base/score"]
    assert loaded.adapter_path == r2.adapter_path  # the loaded model is left on the new version


class Scripted:
    """A judge whose verdicts are given in advance (the win-rate rule alone, no model)."""

    def __init__(self, kind, choices):
        self.kind, self.name, self.choices = kind, f"{kind}:scripted", choices

    def judge(self, prompts, pairs):
        return [Verdict(c) for c in self.choices[: len(pairs)]]


def test_win_rate_counts_a_tie_half_and_a_skip_not_at_all_and_needs_a_program_judge():
    prompts, mine, theirs = [[{"role": "user", "content": "q"}]] * 2, [["a", "b"], ["c", "d"]], [["e", "f"], ["g", "h"]]
    assert heldout.win_rate(Scripted("prefer", [1, 0, 2, None]), prompts, mine, theirs) == pytest.approx(1.5 / 3)
    assert heldout.win_rate(Scripted("prefer", [None] * 4), prompts, mine, theirs) is None
    assert heldout.win_rate(Scripted("human", [1] * 4), prompts, mine, theirs) is None  # nobody is asked
    assert heldout.win_rate(None, prompts, mine, theirs) is None


def test_the_heldout_set_is_the_eval_prompts_or_the_validation_prompts_each_once(tmp_path):
    demo = load_pairs(DEMO_PAIRS_PATH).pairs
    twice = [demo[0], PreferencePair("again", demo[0].prompt, "x", "y"), demo[1]]
    held = rounds.heldout_set(
        tmp_path,
        RoundSettings(heldout_prompts=5),
        valid_pairs=twice,
        eval_prompts=None,
        judge=None,
        sample_settings=None,
        beta=0.1,
        batch_size=2,
    )
    assert held.prompts == [demo[0].prompt, demo[1].prompt] and held.valid_pairs == twice
    given = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    held = rounds.heldout_set(
        tmp_path,
        RoundSettings(heldout_prompts=3),
        valid_pairs=[],
        eval_prompts=given,
        judge=None,
        sample_settings=None,
        beta=0.1,
        batch_size=2,
    )
    assert held.prompts == given[:3] and held.valid_pairs == []
    assert held.left_out == " on the first 3 of 4 held-out prompts (--heldout-prompts)"  # a cap is said, not silent
    assert (
        rounds.heldout_set(
            tmp_path,
            RoundSettings(),
            valid_pairs=[],
            eval_prompts=given,
            judge=None,
            sample_settings=None,
            beta=0.1,
            batch_size=2,
        ).left_out
        == ""
    )
    assert (
        rounds.heldout_set(
            tmp_path,
            RoundSettings(),
            valid_pairs=[],
            eval_prompts=None,
            judge=None,
            sample_settings=None,
            beta=0.1,
            batch_size=2,
        )
        is None
    )  # nothing to measure
