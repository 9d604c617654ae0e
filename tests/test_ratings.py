"""Rated groups in the store (schema migration 6): a person's ratings and a judge's rewards, with the answer's tokens,
the version that sampled it and the sampler; which rounds trained them; and a judge's round-robin rewards."""

from __future__ import annotations

import pytest
from helpers import user

from mlx_dpo.data.answers import Answer
from mlx_dpo.data.rating_labels import add_rating_labels, rating_feedback, rating_pairs
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.online.groups import group_rewards, round_robin
from mlx_dpo.online.judges import PreferJudge, ScoreJudge

PROMPT = [user("Name a fruit.")]


def test_a_persons_ratings_are_kept_with_tokens_version_and_sampler_and_can_be_changed(workspace):
    with PreferenceStore(workspace) as s:
        group = s.ratings.add_group(
            PROMPT,
            ["Apple.", Answer("Pear, and", False), "Fig."],
            [5, 2, 3],
            version="v2",
            sampler="tiny v2 · temp 0.8",
            tokens=[[1, 2], [3], None],
        )
    with PreferenceStore(workspace) as s:
        [again] = s.ratings.groups(rater="human")
        assert again == group and again.rewards == [5, 2, 3] and again.prompt == PROMPT
        assert [r.tokens for r in again.ratings] == [[1, 2], [3], None]
        assert [r.answer.finished for r in again.ratings] == [True, False, True]
        assert {(r.version, r.sampler, r.rater) for r in again.ratings} == {("v2", "tiny v2 · temp 0.8", "human")}
        changed = s.ratings.rate(again.ids[1], 4)
        assert changed.reward == 4 and s.ratings.groups()[0].rewards == [5, 4, 3]


@pytest.mark.parametrize(
    "answers, rewards, match",
    [
        (["a", "b"], [0, 3], "from 1 to 5"),
        (["a", "b"], [6, 3], "from 1 to 5"),
        (["a", "b"], [2.5, 3], "from 1 to 5"),
        (["a", "b"], [True, 3], "from 1 to 5"),
        (["a"], [3], "2 to 6 answers"),
        (["a"] * 7, [3] * 7, "2 to 6 answers"),
        (["a", "b"], [3], "2 answers but 1 rewards"),
        (["a", " "], [3, 4], "answer 2"),
    ],
)
def test_bad_ratings_are_refused_with_one_line_and_nothing_is_stored(workspace, answers, rewards, match):
    with PreferenceStore(workspace) as s:
        with pytest.raises(MlxDpoError, match=match):
            s.ratings.add_group(PROMPT, answers, rewards)
        assert s.ratings.groups() == []


def test_a_judges_reward_is_not_a_persons_to_change_and_an_unknown_rating_is_named(workspace):
    with PreferenceStore(workspace) as s:
        group = s.ratings.add_group(PROMPT, ["a", "b"], [0.25, -1.5], rater="score:j.py:f")
        with pytest.raises(MlxDpoError, match="not a person's rating"):
            s.ratings.rate(group.ids[0], 3)
        with pytest.raises(MlxDpoError, match="no rating 999"):
            s.ratings.rate(999, 3)
        with pytest.raises(MlxDpoError, match="finite"):
            s.ratings.add_group(PROMPT, ["a", "b"], [float("nan"), 1.0], rater="score:j.py:f")


def test_only_a_kept_round_trains_a_group_a_rejected_ones_groups_wait_for_the_next(workspace, tmp_path):
    with PreferenceStore(workspace) as s:
        first = s.ratings.add_group(PROMPT, ["a", "b"], [1, 5])
        second = s.ratings.add_group(PROMPT, ["c", "d"], [2, 3])
        s.record_round(1, tmp_path / "v1", {}, {}, "finished", [], "rejected", "worse")
        s.ratings.record_round(1, first.ids)
        assert [g.key for g in s.ratings.untrained()] == [first.key, second.key]
        s.record_round(2, tmp_path / "v2", {}, {}, "finished", [], "accepted", "better")
        s.ratings.record_round(2, first.ids)
        assert [g.key for g in s.ratings.untrained()] == [second.key]
        assert s.ratings.round_ids(2) == first.ids


def test_ratings_give_dpo_best_against_worst_and_kto_good_and_bad_and_are_added_once(workspace):
    with PreferenceStore(workspace) as s:
        rated = s.ratings.add_group(PROMPT, ["ok", "great", "bad", "great too"], [3, 5, 1, 5])
        s.ratings.add_group(PROMPT, ["same", "again"], [4, 4])  # equal ratings: no pair
        s.ratings.add_group(PROMPT, ["judged", "by a program"], [0.1, 0.9], rater="score:j.py:f")  # not a person's
        groups = s.ratings.groups(rater="human")
        [pair] = rating_pairs(groups)
        assert (pair.id, pair.chosen, pair.rejected) == (f"rating-{rated.key}", "great", "bad")  # earliest best
        assert [(f.completion, f.desirable) for f in rating_feedback(groups, 4)] == [
            ("ok", False),
            ("great", True),
            ("bad", False),
            ("great too", True),
            ("same", True),
            ("again", True),
        ]
        pairs, marked = add_rating_labels(s, 4)
        assert (pairs.added, marked.added) == (1, 6)
        assert [(p.chosen, p.rejected, p.external_id) for p in s.list_pairs()] == [("great", "bad", pair.id)]
        again = add_rating_labels(s, 4)
        assert (again[0].added, again[1].added) == (0, 0) and len(s.list_feedback()) == 6


def test_a_prefer_judges_rewards_are_round_robin_wins_with_ties_halved_and_no_win_for_a_cut_answer():
    def longer(prompt, a, b):
        return 1 if len(a) > len(b) else 2 if len(b) > len(a) else 0

    judge = PreferJudge("j.py:longer", longer)
    asked = []
    judge.fn = lambda p, a, b: asked.append((a, b)) or longer(p, a, b)
    answers = ["aaa", "b", "cc", "dd"]
    # Pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): the earlier answer shown first, then second, alternately.
    assert round_robin(judge, PROMPT, answers) == [3.0, 0.0, 1.5, 1.5]
    assert asked == [("aaa", "b"), ("cc", "aaa"), ("aaa", "dd"), ("cc", "b"), ("b", "dd"), ("dd", "cc")]
    cut = ["long but cut", Answer("x", True)]
    cut[0] = Answer("long but cut", False)
    assert round_robin(judge, PROMPT, cut) == [0.0, 0.0]  # the longer one is unfinished: its win does not count
    rewards, note = group_rewards(ScoreJudge("j.py:n", lambda p, a: len(a), missing_end_penalty=1.0), PROMPT, cut)
    assert rewards == [11.0, 1.0] and note == "scores 11, 1"
