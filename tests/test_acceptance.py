"""A round is kept only if it helped (mlx_dpo.training.acceptance): the rule on held-out numbers, and a round
pushed past its KL budget rejected, with the next round sampling from the last accepted version.

Cost: about 25 s serially on 2 vCPU (three short online rounds on a tiny model; the rest is arithmetic).
"""

from __future__ import annotations

import math

import pytest
from helpers import user

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.settings import OnlineSettings, RoundSettings
from mlx_dpo.training.acceptance import decide, margin, step_scale

BASE = {"heldout/repetition": 0.02, "heldout/unfinished": 0.5}


def numbers(kl=1.0, win=0.5, compared=64, repetition=0.02, unfinished=0.4, samples=64) -> dict:
    return {
        "heldout/kl": kl,
        "heldout/win_vs_previous": win,
        "heldout/compared_previous": compared,
        "heldout/repetition": repetition,
        "heldout/unfinished": unfinished,
        "heldout/samples": samples,
    }


def test_the_margin_is_two_standard_errors_of_a_win_rate_at_one_half():
    assert margin(64) == pytest.approx(2 * math.sqrt(0.25 / 64)) == pytest.approx(0.125)
    assert margin(16) == pytest.approx(0.25) and margin(0) == math.inf
    assert [step_scale(n) for n in (0, 1, 2)] == [1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    "candidate, accept, accepted, words",
    [
        (numbers(), "better", True, "wins 0.50 vs the base (>= 0.38 over 64)"),
        (numbers(win=0.38), "better", True, ">= 0.38"),  # within the noise of 64 comparisons
        (numbers(win=0.30), "better", False, "wins 0.30 vs the base (< 0.38 over 64)"),
        (numbers(win=0.30, compared=4), "better", True, "over 4"),  # 4 comparisons cannot tell a loss from chance
        (numbers(win=0.30), "kl", True, "KL 1.00 <= budget 3 nats"),  # kl: the judge is not asked
        (numbers(kl=3.5), "kl", False, "KL 3.50 > budget 3 nats"),
        (numbers(repetition=0.6), "kl", False, "repeated 3-grams 0.02 -> 0.60 (a jump)"),
        (numbers(unfinished=0.6), "kl", True, "unfinished 0.50 -> 0.60"),  # +0.1: within 0.125 over 64 samples
        (numbers(unfinished=0.7), "kl", False, "unfinished 0.50 -> 0.70 (a jump)"),
        (numbers(kl=9.0, win=0.0, repetition=1.0), "always", True, "--accept always"),
    ],
)
def test_one_rule_keeps_or_rejects_a_round_and_says_why(candidate, accept, accepted, words):
    ok, reason = decide(candidate, None, BASE, accept=accept, kl_budget=3.0)
    assert ok is accepted and words in reason, reason


def test_degeneration_is_compared_with_the_last_accepted_version_not_the_base():
    previous = numbers(unfinished=0.1)
    assert decide(numbers(unfinished=0.4), previous, BASE)[0] is False  # 0.1 -> 0.4 jumps, though below the base's
    assert "vs the previous version" in decide(numbers(unfinished=0.1), previous, BASE)[1]


SPACES_JUDGE = 'def spaces(prompt, answer):\n    return answer.count(" ") / max(1, len(answer))\n'
# Gentle rounds hardly move a tiny model; a learning rate this high moves it many nats at once.
GENTLE = {
    "learning_rate": 1e-6,
    "iters": 2,
    "batch_size": 4,
    "compile": False,
    "heldout_samples": 2,
    "accept": "kl",
    "kl_budget": 0.5,
}
PUSHED = {**GENTLE, "learning_rate": 5e-2, "iters": 8}


def test_a_round_past_its_kl_budget_is_rejected_and_the_next_round_samples_from_the_last_accepted_version(
    tiny, workspace, tmp_path
):
    from mlx_dpo import api

    (tmp_path / "judge.py").write_text(SPACES_JUDGE)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Tell me about thing {i}.\n" for i in range(12)))

    def rounds(count: int, settings: dict):
        return api.run_online(
            workspace,
            prompts,
            f"{tmp_path / 'judge.py'}:spaces",
            model=str(tiny),
            online=OnlineSettings(rounds=count, per_round=4, samples_per_prompt=2),
            eval_prompts=[[user(f"Describe item {i}.")] for i in range(3)],
            sample_settings=SampleSettings(temperature=2.0, max_tokens=8),
            settings=settings,
        )

    [first] = rounds(1, GENTLE)
    assert (first.version, first.decision) == ("v1", "accepted")
    [second] = rounds(2, PUSHED)
    assert (second.sampled_by, second.version, second.decision) == ("v1", "v2", "rejected")
    assert second.heldout["heldout/kl"] > 0.5 and "> budget 0.5 nats" in second.reason
    with PreferenceStore(workspace) as store:
        v2 = store.get_round(2)
        assert (v2.decision, v2.reason) == ("rejected", second.reason)  # the record says why
        assert store.latest_kept_round().version == 1 and store.rejected_since_kept() == 1
        rejected_pairs = {p.id for p in store.list_pairs() if p.version == "v1"}  # round 2's, sampled by v1
        assert rejected_pairs and rejected_pairs <= set(v2.pair_ids)
        assert {p.id for p in store.untrained_pairs()} == rejected_pairs  # a rejected round trains nothing for good
    [third] = rounds(3, PUSHED)
    assert third.sampled_by == "v1"  # sampled from the last accepted version, not from v2
    with PreferenceStore(workspace) as store:
        v3 = store.get_round(3)
        pairs = {p.id: p for p in store.list_pairs()}
    assert v3.settings["init_adapter"] == str(workspace / "adapters" / "v1")  # ... and trained on top of it
    assert v3.settings["learning_rate"] == pytest.approx(PUSHED["learning_rate"] / 2)  # a smaller step
    assert v3.settings["step_scale"] == 0.5
    assert rejected_pairs <= set(v3.pair_ids)  # the rejected round's pairs are tried again, with the new ones
    assert {pairs[i].version for i in v3.pair_ids if i not in rejected_pairs} <= {"v1", "base"}  # new (v1) + replayed
    assert third.decision in ("accepted", "rejected") and third.reason


def test_a_person_can_keep_a_rejected_version_and_only_a_finished_round_can_be_kept(workspace):
    with PreferenceStore(workspace) as store:
        store.record_round(1, workspace / "adapters" / "v1", {}, {}, "finished", [], "rejected", "KL 9 > budget 3")
        store.record_round(2, workspace / "adapters" / "v2", {}, {}, "cancelled", [])
        assert store.latest_kept_round() is None
        kept = store.decide_round(1, True, "accepted by a person (the rule said: KL 9 > budget 3)")
        assert kept.kept and store.latest_kept_round().version == 1
        with pytest.raises(MlxDpoError, match="did not finish"):
            store.decide_round(2, True, "x")


def test_accept_and_kl_budget_are_settings_with_one_rule_each():
    assert (RoundSettings().accept, RoundSettings().kl_budget) == ("better", 5.0)
    with pytest.raises(MlxDpoError, match="unknown accept .sometimes.; choose from always, kl, better"):
        RoundSettings(accept="sometimes")
    with pytest.raises(MlxDpoError, match="kl_budget must be > 0"):
        RoundSettings(kl_budget=0)
