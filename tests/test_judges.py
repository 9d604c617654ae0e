"""Judges (`mlx_dpo.online.judges.load_judge`): a SPEC names a Python score or preference function, a local
LLM asked in both orders, or a person. A bad spec or a misbehaving judge is one line naming it."""

import math
import re

import mlx.core as mx
import numpy as np
import pytest
from helpers import assistant, system, user

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.generate import prompt_tokens
from mlx_dpo.online import demo_judges
from mlx_dpo.online.judges import Prompt, Verdict, load_judge, read_rubric
from mlx_dpo.online.llm_judge import LlmJudge, both_orders, question

CHAT = [system("Be brief."), user("Hello"), assistant("Hi!"), user("Name a colour.")]


def write(tmp_path, text: str, name: str = "my_judge.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_two_argument_function_in_a_file_is_a_score_judge(tmp_path):
    file = write(tmp_path, "seen = []\ndef longer(prompt, answer):\n    seen.append(prompt)\n    return len(answer)\n")
    judge = load_judge(f"{file}:longer")
    assert (judge.kind, judge.name) == ("score", f"score:{file}:longer")
    verdicts = judge.judge([CHAT] * 3, [("red", "blue!"), ("green", "red"), ("red", "tan")])
    assert [v.choice for v in verdicts] == [2, 1, 0]  # equal scores are a tie
    assert verdicts[0].scores == (3.0, 5.0)
    assert judge.score(CHAT, "abcd") == 4.0
    # The prompt is the last user message's text; the whole chat rides along for multi-turn judges.
    prompt = judge.fn.__globals__["seen"][0]
    assert isinstance(prompt, str) and prompt == "Name a colour." and prompt.messages == CHAT


def test_a_three_argument_function_in_a_module_is_a_preference_judge():
    judge = load_judge("mlx_dpo.online.demo_judges:shorter")
    assert (judge.kind, judge.name) == ("prefer", "prefer:mlx_dpo.online.demo_judges:shorter")
    verdicts = judge.judge([CHAT] * 3, [("a b c", "a"), ("a", "a b"), ("a b", "c d")])
    assert verdicts == [Verdict(2), Verdict(1), Verdict(0)]
    assert judge.score(CHAT, "a") is None


def test_a_preference_judge_may_skip_a_pair(tmp_path):
    file = write(tmp_path, "def pick(prompt, a, b, *, strict=False):\n    return None if 'skip' in prompt else 1\n")
    judge = load_judge(f"{file}:pick")
    assert [v.choice for v in judge.judge([[user("skip me")], [user("go")]], [("x", "y")] * 2)] == [None, 1]


@pytest.mark.parametrize(
    "source, name, fragment",
    [
        (None, "missing.py:f", "not found"),
        ("def f(p, a): return 1\n", "g", "has no 'g'"),
        ("f = 3\n", "f", "not a function"),
        ("def f(p): return 1\n", "f", "takes 1 required argument"),
        ("def f(p, a, b, c): return 1\n", "f", "takes 4 required argument"),
        ("def f(*args): return 1\n", "f", "*args"),
        ("raise RuntimeError('boom')\n", "f", "importing"),
    ],
)
def test_a_bad_spec_is_one_line_naming_it(tmp_path, source, name, fragment):
    spec = str(tmp_path / name) if source is None else f"{write(tmp_path, source)}:{name}"
    with pytest.raises(MlxDpoError, match=re.escape(fragment)) as error:
        load_judge(spec)
    assert spec.split(":")[0] in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("no_such_module_xyz:f", "no module named"),
        ("mlx_dpo.online.demo_judges", "expected path/to/file.py:NAME"),
        ("llm:", "needs a model"),
    ],
)
def test_a_spec_that_names_nothing_is_one_line(spec, fragment):
    with pytest.raises(MlxDpoError, match=re.escape(fragment)):
        load_judge(spec)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("def f(p, a): raise ValueError('bad\\ninput')", "raised ValueError: bad input"),
        ("def f(p, a): return True", "returned True"),
        ("def f(p, a): return float('nan')", "returned nan"),
        ("def f(p, a): return '1'", "returned '1'"),
        ("def f(p, a, b): return 3", "returned 3"),
        ("def f(p, a, b): return True", "returned True"),
    ],
)
def test_a_judge_that_raises_or_returns_a_bad_value_is_one_line_naming_it(tmp_path, body, fragment):
    spec = f"{write(tmp_path, body + chr(10))}:f"
    judge = load_judge(spec)
    with pytest.raises(MlxDpoError, match=re.escape(fragment)) as error:
        judge.judge([CHAT], [("one", "two")])
    assert spec in str(error.value) and "\n" not in str(error.value)


def test_human_is_the_app_and_a_rubric_belongs_to_llm_judges(tmp_path):
    judge = load_judge("human")
    assert (judge.kind, judge.name) == ("human", "human")
    with pytest.raises(MlxDpoError, match="the app"):
        judge.judge([CHAT], [("a", "b")])
    with pytest.raises(MlxDpoError, match="--rubric is for llm"):
        load_judge("human", rubric="be fair")
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Prefer answers that rhyme.\n")
    assert read_rubric(str(rubric)) == "Prefer answers that rhyme."
    assert read_rubric("Prefer short answers.") == "Prefer short answers."
    with pytest.raises(MlxDpoError, match="file not found"):
        read_rubric(str(tmp_path / "missing.txt"))


def test_the_demo_judges_grade_what_anyone_can_see():
    one, asks = demo_judges.one_sentence, demo_judges.asks_question
    assert one("", "Paris is the capital of France.") == 1.0
    assert one("", "Paris. It is 3.5 hours away! Nice") == pytest.approx(1 / 3)  # "3.5" does not end one
    assert one("", "   ") == 0.0
    assert asks("", "Paris. Anything else?") == 1.0
    assert 0 < asks("", "Is it Paris? Yes, it is Paris.") < 0.5
    assert asks("", "Paris.") == 0.0
    assert load_judge("mlx_dpo.online.demo_judges:one_sentence").kind == "score"


def test_an_llm_judges_verdict_needs_both_orders_to_agree():
    # (log p("1"), log p("2")) asked as (A, B), then as (B, A)
    assert both_orders((-1.0, -2.0), (-2.0, -1.0)).choice == 1  # A first both times
    assert both_orders((-2.0, -1.0), (-1.0, -2.0)).choice == 2
    biased = both_orders((-1.0, -2.0), (-1.0, -2.0))  # always the first position: a tie
    assert biased.choice == 0 and "disagree" in biased.note
    assert both_orders((-1.0, -1.0), (-2.0, -1.0)).choice == 0  # one order cannot tell
    scores = both_orders((-1.0, -2.0), (-2.0, -1.0)).scores
    assert scores[0] > 0.5 and math.isclose(sum(scores), 1.0)


def test_an_llm_judge_on_a_real_model_asks_both_orders_and_reads_the_next_token(tiny, tmp_path):
    rubric = tmp_path / "rubric.md"
    rubric.write_text("Prefer the answer that names a colour.")
    judge = load_judge(f"llm:{tiny}", rubric=str(rubric))
    assert (judge.kind, judge.name, judge.rubric) == ("llm", f"llm:{tiny}", "Prefer the answer that names a colour.")
    prompts, pairs = [CHAT, [user("Hi")]], [("Blue.", "I like trains a lot."), ("Hello there", "Bye")]
    asked = judge.ask(prompts, pairs)
    assert judge.judge(prompts, pairs) == [both_orders(ab, ba) for ab, ba in asked]
    # Each reading is the model's own next-token log-prob of "1" and "2" after the unpadded question.
    tokenizer, model = judge.loaded.tokenizer, judge.loaded.model
    one, two = (tokenizer.encode(d, add_special_tokens=False) for d in ("1", "2"))
    for (a, b), (prompt, readings) in zip(pairs, zip(prompts, asked)):
        for (first, second), (lp1, lp2) in zip(((a, b), (b, a)), readings):
            logits = model(mx.array([prompt_tokens(tokenizer, question(judge.rubric, prompt, first, second))]))[0, -1]
            logps = np.array(logits - mx.logsumexp(logits))
            assert lp1 >= logps[one[0]] - 1e-4 and lp2 >= logps[two[0]] - 1e-4
            expected = [np.logaddexp.reduce(logps[ids]) for ids in judge.ids]
            assert np.allclose([lp1, lp2], expected, atol=1e-4)


class _AlwaysFirst(LlmJudge):
    """A judge model with a pure position bias: it says "1" whatever the answers."""

    def __init__(self):
        self.name, self.rubric = "llm:always-first", "x"

    def ask(self, prompts, pairs):
        return [((-0.1, -3.0), (-0.1, -3.0)) for _ in pairs]


def test_a_judge_that_only_follows_the_position_gives_ties():
    assert [v.choice for v in _AlwaysFirst().judge([CHAT] * 2, [("a", "b"), ("c", "d")])] == [0, 0]


def test_a_prompt_is_the_last_user_message_with_the_chat_attached():
    prompt = Prompt(CHAT)
    assert prompt == "Name a colour." and prompt.messages[0] == system("Be brief.")
    assert Prompt("plain") == "plain" and Prompt("plain").messages == [user("plain")]
