"""Rewards anyone can read (mlx_dpo.online.rewards): each term by hand, their weighted sum, bad specs in one line,
and a `reward:` spec loads as a score judge like any other."""

import pytest

from mlx_dpo.data.answers import Answer
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.online import rewards
from mlx_dpo.online.judges import ScoreJudge, load_judge


@pytest.mark.parametrize(
    "spec, answer, expected",
    [
        ("reward:length=4", "one two three four", 1.0),
        ("reward:length=4", "one two", 0.5),  # 1 - |2 - 4| / 4
        ("reward:length=2", "one two three four five", 0.0),  # past twice the target: floored at 0
        ("reward:question", "Shall we begin?", 1.0),
        ("reward:question", "Is it? It is.", 0.0),  # it must end with the question
        ("reward:no_repeats", "a b c a b c", 0.75),  # 3-grams abc bca cab abc: one of four repeats
        ("reward:no_repeats=2", "a b a b", 1 - 1 / 3),  # 2-grams ab ba ab
        ("reward:regex=^Answer: \\d+$", "  Answer: 42 ", 1.0),
        ("reward:regex=^Answer: \\d+$", "Answer: forty-two", 0.0),
        ("reward:regex=a+b@c", "aab@c", 1.0),  # "@c" is not a number, so it belongs to the pattern
        ("reward:length=2@0.5 + question@2", "Really now?", 0.5 * 1.0 + 2 * 1.0),
        ("reward:no_repeats@0.5 + regex=^x.*$@0.25", "x y z", 0.5 + 0.25),
    ],
)
def test_each_term_scores_as_worked_by_hand_and_terms_add_by_weight(spec, answer, expected):
    assert rewards.parse(spec)("a prompt", answer) == pytest.approx(expected)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("reward:loud", "unknown reward 'loud'"),
        ("reward:length=0", "length needs a positive whole number"),
        ("reward:length=ten", "length needs a positive whole number"),
        ("reward:question=yes", "question takes no value"),
        ("reward:regex=(", "does not compile"),
    ],
)
def test_a_bad_reward_spec_is_one_line_naming_the_term(spec, words):
    with pytest.raises(MlxDpoError, match=words) as caught:
        load_judge(spec)
    assert "\n" not in str(caught.value) and spec in str(caught.value)


def test_a_reward_spec_is_a_score_judge_with_the_missing_end_penalty():
    judge = load_judge("reward:question", missing_end_penalty=1.0)
    assert isinstance(judge, ScoreJudge)
    assert judge.score([{"role": "user", "content": "hi"}], Answer("Why not?")) == 1.0
    assert judge.score([{"role": "user", "content": "hi"}], Answer("Why not?", finished=False)) == 0.0
