"""Label review: a mislabelled pair is found after training; contradicting labels are found without a model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import user

from mlx_dpo.data.contradictions import find_contradictions
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.training.review import review_pairs
from mlx_dpo.training.rounds import run_round

TINY_SEED = 31


def _pair(id: int, chosen: str, rejected: str, prompt: str = "Q?") -> SimpleNamespace:
    return SimpleNamespace(id=id, prompt=[user(prompt)], chosen=chosen, rejected=rejected)


# --- contradictions: pure, no model ---------------------------------------------------------------------------


def test_the_same_answers_judged_both_ways_under_one_prompt_are_a_contradiction():
    found = find_contradictions([_pair(1, "a", "b"), _pair(2, "c", "d"), _pair(3, " b ", "a")])
    assert [(c.kind, c.pair_ids, c.answers) for c in found] == [("reversed", (1, 3), ("a", "b"))]


def test_a_circle_through_three_answers_is_a_contradiction_with_every_pair_on_it():
    pairs = [_pair(1, "a", "b"), _pair(2, "b", "c"), _pair(3, "c", "a"), _pair(4, "a", "d")]
    found = find_contradictions(pairs)
    assert [(c.kind, c.pair_ids, set(c.answers)) for c in found] == [("cycle", (1, 2, 3), {"a", "b", "c"})]


def test_consistent_labels_repeated_labels_and_other_prompts_are_no_contradiction():
    pairs = [
        _pair(1, "a", "b"),
        _pair(2, "a", "b"),
        _pair(3, "b", "c"),
        _pair(4, "a", "c"),
        _pair(5, "b", "a", prompt="Another question?"),
    ]
    assert find_contradictions(pairs) == []


# --- review after training -------------------------------------------------------------------------------------

GOOD, BAD = "Sure, here is a clear and friendly answer.", "No."
SWAPPED = 4  # the one pair labelled the wrong way round


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny) -> Path:
    """A workspace with one finished round on 8 pairs that all prefer the long friendly answer, but one."""
    workspace = tmp_path_factory.mktemp("review") / "workspace"
    with PreferenceStore(workspace) as store:
        for i in range(1, 9):
            chosen, rejected = (f"{BAD} ({i})", f"{GOOD} ({i})") if i == SWAPPED else (f"{GOOD} ({i})", f"{BAD} ({i})")
            assert store.add_pair(f"Question number {i}?", chosen, rejected).id == i
    result = run_round(
        workspace,
        model=str(tiny),
        settings={
            "iters": 3,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "lora_rank": 4,
            "seed": 1,
            "save_every": 3,
            "compile": False,
        },
    )
    assert result.status == "finished"
    return workspace


def test_the_swapped_pair_comes_first_in_the_review_of_a_trained_round(trained, tiny):
    report = review_pairs(trained, model=str(tiny))

    assert report.version == "v1" and report.adapter_path == trained / "adapters" / "v1"
    assert len(report.items) == 8 and report.skipped == [] and report.contradictions == []
    first = report.items[0]
    assert first.pair_id == SWAPPED
    assert first.margin < 0 and first.margin == pytest.approx(first.chosen_reward - first.rejected_reward)
    assert all(i.margin > 0 for i in report.items[1:])  # every consistent pair is judged as labelled
    assert [i.margin for i in report.items] == sorted(i.margin for i in report.items)


def test_data_review_prints_the_worst_pairs_as_json(trained, tiny, capsys):
    from mlx_dpo.cli import main

    assert main(["data", "review", "--workspace", str(trained), "--model", str(tiny), "--limit", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "v1" and out["pairs"] == 8 and len(out["items"]) == 2
    assert out["items"][0]["pair_id"] == SWAPPED and out["items"][0]["margin"] < 0
    assert out["contradictions"] == []


def test_data_review_before_any_round_lists_contradictions_and_says_why_no_pair_is_scored(workspace, capsys):
    from mlx_dpo.cli import main

    with PreferenceStore(workspace) as store:
        store.add_pair("Q?", "a", "b")
        store.add_pair("Q?", "b", "a")
    assert main(["data", "review", "--workspace", str(workspace)]) == 0
    captured = capsys.readouterr()
    assert "no finished round to review with yet" in captured.err
    assert "1 contradiction(s)" in captured.out and "reversed: pairs 1, 2" in captured.out


def test_data_review_of_a_missing_workspace_is_one_clear_line(tmp_path, capsys):
    from mlx_dpo.cli import main

    assert main(["data", "review", "--workspace", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no preference store here" in err
    assert not (tmp_path / "nowhere").exists()
