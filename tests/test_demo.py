"""`make demo` (`python -m mlx_dpo.demo`) end to end on a tiny model, so it cannot break unseen.

The demo itself runs three online rounds on the embedded default model (minutes on a CPU); here the same
code runs one round of two prompts on the module's tiny llama, with two held-out prompts: the doctor line,
the round judged and trained, the held-out scores with their noise, base and tuned answers side by side.
"""

from __future__ import annotations

from mlx_dpo import demo
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.settings import OnlineSettings

# The shipped judge would call every answer of a random tiny model a tie (one "sentence" without a full stop);
# the share of spaces tells two of its answers apart, so the round has pairs to train.
SPACES = 'def spaces(prompt, answer):\n    return answer.count(" ") / max(1, len(answer))\n'


def test_the_demo_runs_an_online_round_and_prints_the_held_out_scores_and_the_answers_before_and_after(
    tmp_path, tiny, fresh_cache, capsys
):
    workspace, judge = tmp_path / "demo", tmp_path / "judge.py"
    judge.write_text(SPACES)
    assert (
        demo.main(
            model=str(tiny),
            workspace=workspace,
            online=OnlineSettings(rounds=1, per_round=2),
            sampler=SampleSettings(temperature=2.0, max_tokens=6),
            heldout_prompts=2,
            judge=f"{judge}:spaces",
            run=dict(iters=1, lora_num_layers=2, compile=False, heldout_samples=2, accept="always"),
        )
        == 0
    )
    printed = capsys.readouterr().out

    assert printed.startswith("\n== mlx-dpo ") and "BLAS:" in printed and "default model ready in" in printed
    assert "== 1 online rounds of 2 prompts x 4 answers, judged by spaces, every setting at its default" in printed
    assert "round 1: judged 2 prompts' answers from base" in printed
    assert "  held-out judge score " in printed and "KL to base " in printed and "repeated 3-grams " in printed
    assert "  v1 accepted: kept without a check (--accept always)" in printed
    assert "== held-out score, the judge's own (2 prompts, 4 samples; one sample moves it by 0.250 at most" in printed
    assert "\n  base  " in printed and "\n  v1    " in printed and "standard error over 4 samples" in printed
    assert "\n  gain  " in printed and "cut at max tokens " in printed
    assert "== base and v1 side by side: the first sample for the first 3 held-out prompts" in printed
    assert f"\nQ: {demo.read_prompt_file(demo.HELDOUT)[0][-1]['content']}\nbase (score " in printed
    with PreferenceStore(workspace) as store:
        judged = store.list_pairs() + store.list_skips()
        rounds = store.list_rounds()
    assert len(judged) == 2 and {p.judge for p in judged} == {f"score:{judge}:spaces"}
    assert [r.version for r in rounds] == [1]


def test_the_demos_judge_and_prompt_files_ship_with_the_package():
    from mlx_dpo.data.prompt_file import read_prompt_file
    from mlx_dpo.online.judges import load_judge

    assert load_judge(demo.JUDGE).kind == "score"
    assert len(read_prompt_file(demo.PROMPTS)) >= demo.ONLINE.rounds * demo.ONLINE.per_round
    assert [demo.QUESTION] == [
        p[-1]["content"] for p in read_prompt_file(demo.HELDOUT) if p[-1]["content"] == demo.QUESTION
    ]
