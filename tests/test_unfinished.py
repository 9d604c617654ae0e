"""Answers cut at --max-tokens (mlx_dpo.data.answers): the sampler says so, the store keeps it, a judge sees it,
no program judge's pair prefers one over a finished answer, and training never appends an end-of-turn to one.

Cost: about 10 s serially on 2 vCPU (a few greedy tokens of the default model, one tiny online round).
"""

from __future__ import annotations

import json

import pytest
from helpers import user

from mlx_dpo.data.answers import Answer, is_finished
from mlx_dpo.data.online_records import Comparison
from mlx_dpo.data.pairs import PreferencePair, load_pairs
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.online.judges import load_judge
from mlx_dpo.online.loop import judge_and_store
from mlx_dpo.online.pairing import choose_pair
from mlx_dpo.online.sampling import sample_answers
from mlx_dpo.online.verdict import may_prefer
from mlx_dpo.training.heldout import mean_score
from mlx_dpo.training.tokens import Encoder

SHORT = [user("What is the capital of France? Answer in one word.")]  # the default model ends it in a few tokens
LONG = [user("Write a long essay about the history of the sea.")]  # ... and not this one in 12
END_OF_TURN = 2  # SmolLM2's "<|im_end|>"


@pytest.fixture(scope="module")
def sampled(default_model):
    """One greedy answer that finished and one cut at max tokens, from the real sampler."""
    greedy = SampleSettings(temperature=0.0, max_tokens=12)
    [[finished], [cut]] = sample_answers(default_model, [SHORT, LONG], greedy, n=1).answers
    return finished, cut


def test_the_sampler_marks_an_answer_cut_at_max_tokens_unfinished(sampled, default_model):
    finished, cut = sampled
    assert isinstance(finished, Answer) and finished.finished and "Paris" in finished
    assert isinstance(cut, Answer) and not cut.finished
    # The same prompts one at a time (the app's streaming path) agree on which finished.
    from mlx_dpo.online import sampling

    generated = sampling._one_at_a_time(
        default_model,
        [sampling.prompt_tokens(default_model.tokenizer, m) for m in (SHORT, LONG)],
        SampleSettings(0.0, max_tokens=12),
    )
    assert [done for _ids, done in generated] == [True, False]


# A judge that likes long answers: it would choose the cut one over the finished one if the rule let it.
LONGER = "def longer(prompt, answer):\n    return float(len(answer))\n"
PREFER_LONGER = "def prefer_longer(prompt, a, b):\n    return 1 if len(a) > len(b) else 2 if len(b) > len(a) else 0\n"


@pytest.fixture
def judges(tmp_path):
    (tmp_path / "j.py").write_text(LONGER + PREFER_LONGER)
    return {
        "score": load_judge(f"{tmp_path / 'j.py'}:longer", missing_end_penalty=0.0),
        "prefer": load_judge(f"{tmp_path / 'j.py'}:prefer_longer"),
    }


@pytest.mark.parametrize("kind", ["score", "prefer"])
def test_a_program_judge_never_pairs_a_cut_answer_over_a_finished_one(sampled, judges, workspace, kind):
    finished, cut = sampled
    assert len(cut) > len(finished)  # the judge's own preference is the cut answer
    with PreferenceStore(workspace) as store:
        kind_given = judge_and_store(store, judges[kind], SHORT, [finished, cut], sampler="s", version="base")
        assert kind_given == "skips" and store.count_pairs() == 0
        assert store.list_skips()[0].reason == (
            "the judge preferred an unfinished answer over a finished one"
            if kind == "prefer"
            else f"scores {len(finished):g}, {len(cut):g}: only unfinished answers score above finished ones"
        )
        # Kept with its flags: the cut answer comes back unfinished.
        assert [is_finished(a) for a in store.list_skips()[0].answers] == [True, False]
        # Among four answers the judge's own favourites are cut ones; the pair it gives still obeys the rule.
        shorter, longest = Answer("P"), Answer(cut + "!", False)
        four = [cut, finished, longest, shorter]
        assert judge_and_store(store, judges[kind], SHORT, four, sampler="s", version="base") == "pairs"
        [pair] = store.list_pairs()
    assert may_prefer(pair.chosen, pair.rejected)
    if kind == "score":  # the widest score gap the rule allows: finished over finished
        assert (pair.chosen, pair.rejected) == (finished, shorter) and is_finished(pair.chosen)
    else:  # the knockout: the cut answers' wins over finished ones do not count; the longest cut one beat the first
        assert (pair.chosen, pair.rejected) == (longest, cut) and not pair.chosen.finished


def test_a_penalty_lowers_a_cut_answers_score_and_a_person_may_still_choose_one(judges, tmp_path):
    judge = load_judge(f"{tmp_path / 'j.py'}:longer", missing_end_penalty=100.0)
    assert judge.score(SHORT, Answer("abc", False)) == 3.0 - 100.0 and judge.score(SHORT, Answer("abc")) == 3.0
    assert judge.score(SHORT, "abc") == 3.0  # text without the flag counts as finished
    # The held-out score is the judge's own: the penalty decides comparisons, not the number a person reads.
    assert judge.raw_score(SHORT, Answer("abc", False)) == 3.0
    assert mean_score(judge, [SHORT], [[Answer("abc", False), Answer("abcde")]]) == 4.0
    assert may_prefer(Answer("cut", False), Answer("done"), by_person=True)
    assert not may_prefer(Answer("cut", False), Answer("done"))
    assert may_prefer(Answer("cut", False), Answer("also cut", False))
    assert may_prefer(Answer("done"), Answer("x", False))


def test_a_knockout_makes_n_minus_1_comparisons_pairs_the_winner_with_the_first_loser_and_stores_them(
    judges, workspace
):
    answers = [Answer("bb"), Answer("a"), Answer("dddd"), Answer("ccc")]  # prefer_longer: 1 > 2, 3 > 1, 3 > 4
    judged = choose_pair(judges["prefer"], SHORT, answers)
    assert [(c.first, c.second, c.choice) for c in judged.comparisons] == [
        ("bb", "a", 1),
        ("bb", "dddd", 2),
        ("dddd", "ccc", 1),
    ]
    # The winner is "dddd"; the first loser is "a" (it lost the first decisive comparison, to "bb", which lost to
    # "dddd"): stored in sampled order, "a" (answer 2) before "dddd" (answer 3).
    assert (judged.first, judged.second, judged.choice) == (1, 2, 2)
    with PreferenceStore(workspace) as store:
        judge_and_store(store, judges["prefer"], SHORT, answers, sampler="s", version="base")
        [pair] = store.list_pairs()
        assert (pair.chosen, pair.rejected, pair.shown_first) == ("dddd", "a", "rejected")
        assert store.comparisons(pair_id=pair.id) == judged.comparisons


def test_the_store_keeps_each_answers_flag_through_swap_overrule_and_edit(workspace):
    with PreferenceStore(workspace) as store:
        pair = store.add_pair(
            SHORT,
            Answer("Paris."),
            Answer("The capital of", False),
            judge="score:j",
            comparisons=[Comparison(0, Answer("Paris."), Answer("The capital of", False), 1)],
        )
        assert (pair.chosen.finished, pair.rejected.finished) == (True, False)
        swapped = store.swap_pair(pair.id)
        assert (swapped.chosen.finished, swapped.rejected.finished) == (False, True)
        overruled = store.overrule(pair.id)  # swaps back
        assert (overruled.chosen.finished, overruled.rejected.finished) == (True, False)
        kept = store.update_pair(pair.id, note="checked")  # the texts as they were: flags kept
        assert (kept.chosen.finished, kept.rejected.finished) == (True, False)
        typed = store.update_pair(pair.id, rejected="The capital of France is Paris.")  # typed anew: finished
        assert typed.rejected.finished
        candidate = store.add_candidate(SHORT, [Answer("a"), Answer("b", False)])
        assert [a.finished for a in store.list_candidates()[0].answers] == [True, False] and candidate.id


def test_export_and_import_keep_a_cut_answers_flag(workspace, tmp_path):
    with PreferenceStore(workspace) as store:
        store.add_pair(SHORT, Answer("The capital of", False), Answer("Paris."))  # a person may prefer it
        store.add_pair(SHORT, Answer("Paris!"), Answer("Lyon."))
        store.export_jsonl(tmp_path / "pairs.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert rows[0]["chosen_finished"] is False and "rejected_finished" not in rows[0]
    assert not any(key.endswith("_finished") for key in rows[1])  # a finished pair's row is TRL's plain row
    with PreferenceStore(tmp_path / "elsewhere") as other:
        assert other.import_jsonl(tmp_path / "pairs.jsonl").added == 2
        first, second = sorted(other.list_pairs(), key=lambda p: p.id)
        assert (first.chosen.finished, first.rejected.finished, second.chosen.finished) == (False, True, True)
    loaded = load_pairs(tmp_path / "pairs.jsonl").pairs  # `train --data` reads the flag too
    assert (is_finished(loaded[0].chosen), is_finished(loaded[0].rejected)) == (False, True)


def test_a_finished_field_that_is_not_a_boolean_is_a_row_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "Hi", "chosen": "a", "rejected": "b", "rejected_finished": "no"}) + "\n")
    with pytest.raises(
        MlxDpoError, match=r"bad.jsonl:1: field .rejected_finished.: expected true or false, got string"
    ):
        load_pairs(path)


def test_a_cut_answer_is_trained_on_its_tokens_with_no_end_of_turn_appended(default_model):
    encoder = Encoder(default_model.tokenizer)
    text = "The capital of France is"
    encoded = encoder.encode(PreferencePair("p", SHORT, Answer("Paris."), Answer(text, False)))
    assert encoded.chosen[-1] == END_OF_TURN  # a finished answer ends its turn
    assert END_OF_TURN not in encoded.rejected  # a cut one does not: its ids are its text's, nothing after
    as_finished = encoder.encode(PreferencePair("p", SHORT, Answer("Paris."), Answer(text)))
    assert list(as_finished.rejected) == list(encoded.rejected) + [END_OF_TURN]
    assert default_model.tokenizer.decode(list(encoded.rejected)) == text
