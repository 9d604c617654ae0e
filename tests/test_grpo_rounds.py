"""Group rounds (`method="grpo"`): a program judge's rewards stored as rated groups, GRPO rounds trained on them with
the same versions, held-out numbers and accept rule as DPO rounds, and no reference at all when beta is 0."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import user
from test_online import write_prompts

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.events import StepMetrics

SPACES_JUDGE = """
def spaces(prompt, answer):
    return answer.count(" ") / max(1, len(answer))

def more_spaces(prompt, answer_1, answer_2):
    a, b = answer_1.count(" ") / max(1, len(answer_1)), answer_2.count(" ") / max(1, len(answer_2))
    return 1 if a > b else 2 if b > a else 0
"""
SAMPLER = {"temperature": 2.0, "max_tokens": 8}
# A tiny random model needs a large step to move in two short rounds; every round kept (the rule is tested alone).
# (On this model a program judge's rounds, DPO's as GRPO's, gain a little: 3 training seeds of 4 beat the base.)
ROUND = {
    "method": "grpo",
    "learning_rate": 2e-2,
    "batch_size": 4,
    "passes": 4,
    "grpo_iterations": 2,
    "accept": "always",
}


@pytest.fixture
def judges(tmp_path) -> Path:
    path = tmp_path / "judges.py"
    path.write_text(SPACES_JUDGE)
    return path


def test_grpo_rounds_with_a_program_reward_raise_the_held_out_score_of_a_tiny_model_above_the_bases(
    tiny, workspace, tmp_path, judges
):
    from mlx_dpo import api
    from mlx_dpo.models.generate import SampleSettings
    from mlx_dpo.settings import OnlineSettings

    prompts = write_prompts(tmp_path / "prompts.txt", 16)
    held_out = [[user(f"Describe item {i}.")] for i in range(8)]
    reports = api.run_online(
        workspace,
        prompts,
        f"{judges}:spaces",
        model=str(tiny),
        online=OnlineSettings(rounds=2, per_round=8, samples_per_prompt=4),
        eval_prompts=held_out,
        sample_settings=SampleSettings(**SAMPLER),
        settings={**ROUND, "heldout_samples": 2},
    )
    assert [(r.round, r.sampled_by, r.version) for r in reports] == [(1, "base", "v1"), (2, "v1", "v2")]
    last = reports[-1].heldout
    assert last["heldout/score"] > last["heldout_base/score"], last
    with PreferenceStore(workspace) as s:
        groups = s.ratings.groups()
        rounds = s.list_rounds()
        assert s.list_pairs() == []  # a GRPO round stores groups, not pairs
        trained = {v: s.ratings.round_ids(v) for v in (1, 2)}
    assert len(groups) == 16 and {len(g.ratings) for g in groups} == {4}
    assert {g.ratings[0].version for g in groups} == {"base", "v1"}
    assert {g.ratings[0].rater for g in groups} == {f"score:{judges}:spaces"}
    for g in groups:  # the judge's scores, and the tokens each answer trains on
        assert g.rewards == pytest.approx([a.count(" ") / max(1, len(a)) - (0 if a.finished else 1) for a in g.answers])
        assert all(r.tokens for r in g.ratings)
    assert [r.settings["method"] for r in rounds] == ["grpo", "grpo"]
    assert sorted(trained[1] + trained[2]) == sorted(r.id for g in groups if g.varied for r in g.ratings)


def test_with_beta_zero_no_reference_runs_and_no_cache_opens_with_beta_above_it_the_disk_cache_serves(
    tiny, workspace, judges, fresh_cache, monkeypatch
):
    from mlx_dpo.models.load import load_model
    from mlx_dpo.online.judges import load_judge
    from mlx_dpo.training import grpo
    from mlx_dpo.training.rounds import run_round

    judge = load_judge(f"{judges}:more_spaces")
    answers = ["a b c d", "abcd", "a bcd", "ab cd e"]
    with PreferenceStore(workspace) as s:
        for i in range(4):
            from mlx_dpo.online.groups import rate_and_store

            rate_and_store(s, judge, [user(f"Say thing {i}.")], answers, None, sampler="test", version="base")
    calls = []
    real = grpo.reference_logps
    monkeypatch.setattr(grpo, "reference_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    loaded = load_model(str(tiny))
    settings = {**ROUND, "heldout_samples": 0}
    events = []
    first = run_round(workspace, loaded=loaded, settings=settings, on_event=events.append)
    assert first.accepted and calls == [] and not list(fresh_cache.rglob("*.sqlite"))
    steps = [e.metrics for e in events if isinstance(e, StepMetrics)]
    assert steps and all(m["tokens_per_second"] > 0 for m in steps)  # the progress line's tok/s, as DPO's
    with PreferenceStore(workspace) as s:
        assert s.ratings.untrained() == []
        rate_and_store(s, judge, [user("Say more.")], answers, None, sampler="test", version="v1")
    second = run_round(workspace, loaded=loaded, settings={**settings, "grpo_beta": 0.1})
    assert second.accepted and calls == [1] and list(fresh_cache.rglob("*.sqlite"))
    assert second.metrics["ref_cache/misses"] > 0 and "kl" in second.metrics


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--incremental", "--method", "gpro"], "--method gpro: unknown method (choose from dpo, grpo)"),
        (["train", "--data", "x.jsonl", "--method", "grpo"], "--method applies to a round: add --incremental"),
        (
            ["train", "--incremental", "--method", "grpo", "--grpo-normalize", "words"],
            "--grpo-normalize words: unknown normalisation (choose from sequence, token, constant)",
        ),
        (["train", "--incremental", "--method", "grpo", "--grpo-epsilon", "1.5"], "--grpo-epsilon must be in (0, 1)"),
    ],
)
def test_a_bad_grpo_setting_is_one_line_naming_its_flag_and_exit_2(tmp_path, capsys, argv, message):
    from mlx_dpo.cli import main

    assert main([*argv, "--workspace", str(tmp_path / "ws")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def test_a_grpo_round_with_no_rated_group_that_differs_is_refused_before_anything_is_made(workspace):
    from mlx_dpo.errors import MlxDpoError
    from mlx_dpo.training.rounds import run_round

    with PreferenceStore(workspace) as s:
        s.ratings.add_group([user("Hi?")], ["Hello.", "Hi."], [3, 3])
    with pytest.raises(MlxDpoError, match=r"no rated group to train on.*1 untrained group\(s\) have equal ratings"):
        run_round(workspace, settings={"method": "grpo"})
    assert not (workspace / "adapters" / "v1").exists()
