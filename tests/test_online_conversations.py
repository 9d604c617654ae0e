"""Online rounds on conversations: a prompt file of conversations, a program judge that sees each whole
conversation, and `--turns` continuing every judged conversation with its chosen answer
(mlx_dpo.online.conversations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import assert_clean_error, assistant, run_cli, system, user, write_jsonl

from mlx_dpo import api
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.settings import OnlineSettings

# A score judge that keeps every conversation it was shown (prompt.messages) in a file beside it.
JUDGE = """
import json, pathlib
SEEN = pathlib.Path(__file__).with_name("seen.jsonl")

def spaces(prompt, answer):
    with SEEN.open("a") as f:
        f.write(json.dumps(prompt.messages) + "\\n")
    return answer.count(" ") / max(1, len(answer))
"""
CONVERSATIONS = [
    {
        "messages": [system("Be brief."), user("Name a colour."), assistant("Blue."), user("Why?")],
        "follow_ups": ["Say it in one word."],
    },
    {"messages": [user("Tell me about cats.")]},  # no follow-ups: --follow-up is asked
]


@pytest.fixture
def judge(tmp_path) -> Path:
    path = tmp_path / "judges.py"
    path.write_text(JUDGE)
    return path


def test_an_online_round_two_turns_deep_judges_whole_conversations_and_stores_them_as_threads(
    tiny, workspace, tmp_path, judge
):
    prompts = write_jsonl(tmp_path / "conversations.jsonl", *CONVERSATIONS)
    held_out = [[user("Hi")], [user("Name a fruit.")], [user("Hi"), assistant("Hello."), user("Name a fruit.")]]
    (report,) = api.run_online(
        workspace,
        prompts,
        f"{judge}:spaces",
        model=str(tiny),
        online=OnlineSettings(rounds=1, per_round=2, samples_per_prompt=2, turns=2, follow_up="And then?"),
        eval_prompts=held_out,
        sample_settings=SampleSettings(temperature=2.0, max_tokens=6),
        settings={"iters": 2, "batch_size": 2, "compile": False, "heldout_samples": 2, "accept": "always"},
    )
    with PreferenceStore(workspace) as store:
        pairs = {p.id: p for p in store.list_pairs()}
        links = store.threads.links()
        trained = {p.id for p in store.trained_pairs()}
    first = [p for p in pairs.values() if p.id not in links]
    assert sorted(len(p.prompt) for p in first) == [1, 4]  # each conversation as the file gave it
    assert links and report.pairs == len(pairs) == len(first) + len(links)  # the round counts its later turns
    for child, parent in links.items():  # turn 2: the conversation, its chosen answer, the next user message
        before, after = pairs[parent], pairs[child]
        asked = "Say it in one word." if len(before.prompt) == 4 else "And then?"
        assert after.prompt == before.prompt + [assistant(before.chosen), user(asked)]
        assert after.judge == before.judge and after.version == before.version == "base"
    assert report.version == "v1" and trained == set(pairs)  # every turn trained in the round
    # The held-out numbers per turn depth: their samples add up, and their scores average to the overall one.
    held = report.heldout
    assert (held["heldout/turn1/samples"], held["heldout/turn2/samples"]) == (4, 2)
    assert held["heldout/turn1/kl"] is not None and held["heldout/turn2/kl"] is not None
    per_turn = (4 * held["heldout/turn1/score"] + 2 * held["heldout/turn2/score"]) / 6
    assert per_turn == pytest.approx(held["heldout/score"])
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert {1, 3, 4} <= {len(m) for m in seen} and max(len(m) for m in seen) >= 5  # whole conversations, turn 2 too


def test_a_bad_follow_ups_field_is_one_line_naming_file_and_line(tmp_path, judge, tiny):
    prompts = write_jsonl(tmp_path / "bad.jsonl", CONVERSATIONS[1], {"messages": [user("Hi")], "follow_ups": "Go"})
    result = run_cli(
        "online",
        "--workspace",
        str(tmp_path / "ws"),
        "--prompts",
        str(prompts),
        "--judge",
        f"{judge}:spaces",
        "--model",
        str(tiny),
        "--turns",
        "2",
    )
    assert_clean_error(result, f"{prompts}:2", '"follow_ups"')
    assert result.returncode == 2 and not (tmp_path / "ws").exists()


def test_turns_with_the_human_judge_is_one_line_pointing_to_the_app(tmp_path, tiny):
    prompts = write_jsonl(tmp_path / "p.jsonl", CONVERSATIONS[1])
    result = run_cli(
        "online",
        "--workspace",
        str(tmp_path / "ws"),
        "--prompts",
        str(prompts),
        "--judge",
        "human",
        "--model",
        str(tiny),
        "--turns",
        "2",
    )
    assert_clean_error(result, "--turns is for a program judge", "c after a pick")
    assert result.returncode == 2
