"""`make demo` (`python -m mlx_dpo.demo`) end to end on a tiny model, so it cannot break unseen.

The demo itself runs three online rounds on the embedded default model (minutes on a CPU); here the same
code runs one round of two prompts on the module's tiny llama, with one held-out prompt: the doctor line,
the round judged by the shipped judge and trained, the held-out scores, the answer before and after.
"""

from __future__ import annotations

from mlx_dpo import demo
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.settings import OnlineSettings


# The shipped judge would call every answer of a random tiny model a tie (one "sentence" without a full stop);
# the share of spaces tells two of its answers apart, so the round has pairs to train.
SPACES = 'def spaces(prompt, answer):\n    return answer.count(" ") / max(1, len(answer))\n'


def test_the_demo_runs_an_online_round_and_prints_the_held_out_scores_and_the_answer_before_and_after(
        tmp_path, tiny, fresh_cache, capsys):
    workspace, judge = tmp_path / "demo", tmp_path / "judge.py"
    judge.write_text(SPACES)
    assert demo.main(model=str(tiny), workspace=workspace, online=OnlineSettings(rounds=1, per_round=2),
                     sampler=SampleSettings(temperature=2.0, max_tokens=6), heldout_prompts=1, judge=f"{judge}:spaces",
                     run=dict(iters=1, lora_num_layers=2, compile=False, heldout_samples=2)) == 0
    printed = capsys.readouterr().out

    assert printed.startswith("\n== mlx-dpo ") and "BLAS:" in printed and "default model ready in" in printed
    assert "== 1 online rounds of 2 prompts, judged by spaces, in " in printed
    assert "round 1: judged 2 prompts' answers from base" in printed
    assert "held-out score by version (1 prompts, 2 answers each" in printed
    assert f"== Q: {demo.QUESTION}\nbase: " in printed
    with PreferenceStore(workspace) as store:
        judged = store.list_pairs() + store.list_skips()
        rounds = store.list_rounds()
    assert len(judged) == 2 and {p.judge for p in judged} == {f"score:{judge}:spaces"}
    assert [r.version for r in rounds] == [1]
    assert "  held-out judge score " in printed and "  base  " in printed and "  v1    " in printed
    assert "\nv1:   " in printed  # the answer after the round, from v1


def test_the_demos_judge_and_prompt_files_ship_with_the_package():
    from mlx_dpo.data.prompt_file import read_prompt_file
    from mlx_dpo.online.judges import load_judge

    assert load_judge(demo.JUDGE).kind == "score"
    assert len(read_prompt_file(demo.PROMPTS)) >= demo.ONLINE.rounds * demo.ONLINE.per_round
    assert [demo.QUESTION] == [p[-1]["content"] for p in read_prompt_file(demo.HELDOUT) if p[-1]["content"] == demo.QUESTION]
