"""Online rounds (mlx_dpo.online.loop): every judged pair kept with who judged it and what sampled it, a
restart that goes on where it stopped, and a tiny model that a program judge's rounds make better."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import held_child, run_cli, user

from mlx_dpo.data.online_records import PromptRef
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError

# --- provenance in the store ------------------------------------------------------------------------------


def test_a_pair_keeps_its_judge_its_sampling_version_and_which_answer_was_shown_first(workspace):
    with PreferenceStore(workspace) as s:
        pair = s.add_pair(
            [user("Hi?")],
            "Hello!",
            "Go.",
            origin="sampled",
            judge="score:j.py:short",
            version="v2",
            shown_first="rejected",
        )
    with PreferenceStore(workspace) as s:
        again = s.get_pair(pair.id)
    assert (again.judge, again.version, again.shown_first, again.overruled) == (
        "score:j.py:short",
        "v2",
        "rejected",
        None,
    )


def test_a_pair_labeled_by_a_person_has_no_judge(workspace):
    with PreferenceStore(workspace) as s:
        assert s.add_pair("Hi?", "Hello!", "Go.").judge is None


def test_a_tie_is_a_skip_that_keeps_its_judge_and_version(workspace):
    with PreferenceStore(workspace) as s:
        skip = s.add_skip("Hi?", "tie", answers=["a", "b"], judge="llm:m", version="base")
        assert (s.list_skips()[0].judge, s.list_skips()[0].version) == ("llm:m", "base") == (skip.judge, skip.version)


@pytest.mark.parametrize("field, value", [("version", "2"), ("version", "v0"), ("shown_first", "A"), ("judge", " ")])
def test_bad_provenance_is_refused_and_nothing_is_saved(workspace, field, value):
    with PreferenceStore(workspace) as s:
        with pytest.raises(MlxDpoError, match=field):
            s.add_pair("Hi?", "Hello!", "Go.", **{field: value})
        assert s.count_pairs() == 0


def test_overruling_a_judge_swaps_the_pair_makes_it_the_persons_and_keeps_the_old_judge(workspace):
    with PreferenceStore(workspace) as s:
        pair = s.add_pair("Hi?", "Hello!", "Go.", judge="prefer:j:polite", version="v1", shown_first="chosen")
        after = s.overrule(pair.id)
        assert (after.chosen, after.rejected) == ("Go.", "Hello!")
        assert (after.judge, after.overruled, after.shown_first) == (None, "prefer:j:polite", "rejected")
        with pytest.raises(MlxDpoError, match="by a person"):
            s.overrule(pair.id)


def test_a_prompt_file_position_is_recorded_with_its_pair_and_cannot_be_judged_twice(workspace):
    with PreferenceStore(workspace) as s:
        pair = s.add_pair("Hi?", "Hello!", "Go.", online=PromptRef("/p.txt", 0, 1))
        skip = s.add_skip("Yo?", "tie", online=PromptRef("/p.txt", 1, 1))
        with pytest.raises(MlxDpoError, match="prompt 1 was already judged"):
            s.add_pair("Hi?", "Hi!", "No.", online=PromptRef("/p.txt", 0, 2))
        used = s.online_prompts("/p.txt")
        assert [(u.position, u.round, u.pair_id, u.skip_id, u.trained) for u in used] == [
            (0, 1, pair.id, None, False),
            (1, 1, None, skip.id, False),
        ]
        assert [u.tie for u in used] == [False, True]
        assert s.count_pairs() == 1  # the refused one left nothing behind


# --- the loop on a tiny model -----------------------------------------------------------------------------

# A score judge a 2-layer random model can learn in a couple of short rounds, and a real preference: the
# share of an answer's characters that are spaces (the model must shift towards short, space-led tokens).
SPACES_JUDGE = """
def spaces(prompt, answer):
    return answer.count(" ") / max(1, len(answer))
"""
# Sampling hot enough that two answers differ, short enough to be cheap; steps large enough to move a tiny model.
SAMPLER = {"temperature": 2.0, "max_tokens": 8}
# The loop alone: no NLL anchor and every round kept (tests/test_acceptance.py checks the rule on its own).
ROUND = {
    "learning_rate": 2e-2,
    "iters": 8,
    "batch_size": 4,
    "beta": 0.1,
    "compile": False,
    "rpo_alpha": 0.0,
    "accept": "always",
}


def write_prompts(path: Path, count: int, start: int = 0) -> Path:
    path.write_text("".join(f"Tell me about thing {i}.\n" for i in range(start, start + count)))
    return path


@pytest.fixture
def spaces_judge(tmp_path) -> Path:
    path = tmp_path / "judges.py"
    path.write_text(SPACES_JUDGE)
    return path


def test_a_program_judges_rounds_raise_the_held_out_score_of_a_tiny_model_above_the_bases(
    tiny, workspace, tmp_path, spaces_judge
):
    from mlx_dpo import api
    from mlx_dpo.models.generate import SampleSettings
    from mlx_dpo.settings import OnlineSettings

    prompts = write_prompts(tmp_path / "prompts.txt", 16)
    held_out = [[user(f"Describe item {i}.")] for i in range(8)]
    events = []
    reports = api.run_online(
        workspace,
        prompts,
        f"{spaces_judge}:spaces",
        model=str(tiny),
        online=OnlineSettings(rounds=2, per_round=8),
        eval_prompts=held_out,
        sample_settings=SampleSettings(**SAMPLER),
        settings={**ROUND, "heldout_samples": 2},
        on_event=events.append,
    )
    assert [(r.round, r.sampled_by, r.version, r.prompts) for r in reports] == [
        (1, "base", "v1", 8),
        (2, "v1", "v2", 8),
    ]
    # Round 1 sampled from the base, its reference: the sampled log-probs went into the reference cache. Round 2
    # sampled from v1 and trains against the base: nothing to keep (free_reference.sampler_is_reference).
    kept = [
        e.message for e in events if getattr(e, "message", "").startswith("reference pass: ") and " kept" in e.message
    ]
    assert len(kept) == 1 and kept[0].endswith(
        ("sampled answers' log-probs kept from sampling", "(the others re-tokenize differently)")
    ), kept
    last = reports[-1].heldout
    assert last["heldout/score"] > last["heldout_base/score"], last
    with PreferenceStore(workspace) as s:
        pairs = s.list_pairs()
    assert len(pairs) == reports[0].pairs + reports[1].pairs > 0
    assert {(p.judge, p.origin) for p in pairs} == {(f"score:{spaces_judge}:spaces", "sampled")}
    assert {p.version for p in pairs} == {"base", "v1"}  # each round judged the latest version's answers
    for p in pairs:  # stored the judge's way round
        assert p.chosen.count(" ") / len(p.chosen) > p.rejected.count(" ") / max(1, len(p.rejected))
    # The same call again: this file's two rounds are done, so nothing is sampled, judged or trained.
    assert (
        api.run_online(
            workspace, prompts, f"{spaces_judge}:spaces", model=str(tiny), online=OnlineSettings(rounds=2, per_round=8)
        )
        == []
    )


def online_args(workspace: Path, prompts: Path, judge: Path, tiny: Path) -> list[str]:
    """A cheap `mlx-dpo online` run: 2 rounds of 4 prompts, 2 steps each, no held-out sampling."""
    return [
        "online",
        "--workspace",
        str(workspace),
        "--prompts",
        str(prompts),
        "--judge",
        f"{judge}:spaces",
        "--model",
        str(tiny),
        "--rounds",
        "2",
        "--per-round",
        "4",
        "--temperature",
        "2",
        "--max-tokens",
        "6",
        "--iters",
        "2",
        "--batch-size",
        "4",
        "--no-compile",
        "--heldout-samples",
        "0",
        "--json",
    ]


def test_a_run_killed_between_judging_and_training_keeps_every_judged_pair_and_goes_on_with_the_next_round(
    tiny, workspace, tmp_path, spaces_judge
):
    prompts = write_prompts(tmp_path / "prompts.txt", 8)
    args = online_args(workspace, prompts, spaces_judge, tiny)
    release = tmp_path / "release"
    hook = {"MLX_DPO_PAUSE_AT": "online:judged:1", "MLX_DPO_PAUSE_FILE": str(release)}
    with held_child(args, hook, release, "the end of round 1's judging"):
        with PreferenceStore(workspace) as s:  # what the run had committed when it was killed
            judged = {(p.id, p.chosen, p.rejected) for p in s.list_pairs()}
            skipped = len(s.list_skips())
            assert s.list_rounds() == []
    assert len(judged) + skipped == 4

    restarted = run_cli(*args)
    assert restarted.returncode == 0, restarted.stderr
    rounds = [json.loads(line) for line in restarted.stdout.splitlines() if line.startswith("{")]
    # Round 1 is trained first, on the pairs judged before the kill (none judged again), then round 2 follows.
    assert [(r["round"], r["sampled_by"], r["version"], r["prompts"]) for r in rounds] == [
        (1, "base", "v1", 4),
        (2, "v1", "v2", 4),
    ]
    assert rounds[0]["seconds"]["sampling"] == 0  # nothing was sampled again for round 1
    assert rounds[0]["pairs"] == len(judged) and rounds[0]["ties"] + rounds[0]["skips"] == skipped
    with PreferenceStore(workspace) as s:
        v1 = s.get_round(1)
        assert judged <= {(p.id, p.chosen, p.rejected) for p in s.list_pairs()}
        assert {i for i, _, _ in judged} == set(v1.pair_ids)
        used = s.online_prompts(str(prompts.resolve()))
    assert [(u.position, u.round) for u in used] == [(i, 1 + i // 4) for i in range(8)]


def test_a_prompt_file_edited_under_a_judged_prompt_is_refused(workspace, tmp_path, spaces_judge):
    from mlx_dpo.online.judges import load_judge
    from mlx_dpo.online.loop import run_online

    prompts = write_prompts(tmp_path / "prompts.txt", 2)
    with PreferenceStore(workspace) as s:
        s.add_pair("Tell me about thing 0.", "a b", "ab", online=PromptRef(str(prompts.resolve()), 0, 1))
    write_prompts(prompts, 2, start=5)
    with pytest.raises(MlxDpoError, match="prompt 1 is not the one judged there before"):
        run_online(workspace, prompts, load_judge(f"{spaces_judge}:spaces"))


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--prompts", "missing.txt"], ("missing.txt",)),
        (["--per-round", "0"], ("--per-round",)),
        (["--judge", "nowhere.py:f"], ("nowhere.py",)),
    ],
)
def test_bad_online_input_is_one_line_and_exit_2(tmp_path, spaces_judge, extra, fragments, capsys):
    from mlx_dpo.cli import main

    prompts = write_prompts(tmp_path / "prompts.txt", 2)
    args = [
        "online",
        "--workspace",
        str(tmp_path / "ws"),
        "--prompts",
        str(prompts),
        "--judge",
        f"{spaces_judge}:spaces",
        *extra,
    ]
    assert main(args) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlx-dpo: error: ") and all(f in lines[0] for f in fragments)
    assert not (tmp_path / "ws").exists()  # nothing half-written


def test_the_human_judge_opens_the_app_with_the_prompt_file_as_its_queue_and_a_round_every_k_labels(
    tmp_path, monkeypatch
):
    from mlx_dpo.cli import main
    from mlx_dpo.data.prompt_file import read_prompt_file
    from tui.app import MlxDpoApp

    opened = []
    monkeypatch.setattr(MlxDpoApp, "run", lambda app, *a, **k: opened.append(app))  # the app itself: tests/test_tui*
    prompts = write_prompts(tmp_path / "prompts.txt", 3)
    assert (
        main(
            [
                "online",
                "--workspace",
                str(tmp_path / "ws"),
                "--prompts",
                str(prompts),
                "--judge",
                "human",
                "--per-round",
                "2",
                "--learning-rate",
                "1e-4",
                "--temperature",
                "0.5",
            ]
        )
        == 0
    )
    [app] = opened
    assert app.initial_queue.prompts == read_prompt_file(prompts)
    assert (app.per_round, app.train_settings, app.initial_settings.temperature) == (2, {"learning_rate": 1e-4}, 0.5)
    assert app.judge is None  # a person judges: no program suggestion
