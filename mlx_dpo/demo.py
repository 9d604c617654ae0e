"""`make demo`: the model learns while a program judges it, on the embedded default model, offline.

Converts SmolLM2-135M-Instruct from its GGUF on first use, then runs online rounds (mlx_dpo.online.loop) in a fresh
workspace with every setting at its default (mlx_dpo.settings; the experiment that chose them is in
benchmarks/README.md): each round samples 4 answers to each of the next 16 prompts of a prompt file shipped with the
package, from the last accepted version; a judge shipped with the package scores them (`one_sentence`: an answer in
one sentence beats a longer one, a preference anyone can see on screen; an answer cut at max tokens loses the
missing-end penalty); the best answer is paired with the worst, and a round trains on the pairs. Each round is
measured on held-out prompts no round trains on, and kept only if its held-out numbers say it helped
(mlx_dpo.training.acceptance).

It prints, per round, the judge's held-out score next to the base's with its noise, the KL to the base, the
degeneration figures and whether the round was kept; at the end, base and tuned answers to the first held-out
prompts side by side, each with its score.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import textwrap
import time
from pathlib import Path

from mlx_dpo import doctor
from mlx_dpo.api import run_online
from mlx_dpo.data.pairs import DEMO_PAIRS_PATH
from mlx_dpo.data.prompt_file import read_prompt_file
from mlx_dpo.metric_names import HELDOUT_KL, HELDOUT_REPETITION, HELDOUT_SCORE, HELDOUT_UNFINISHED, base_key
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.models.load import load_model
from mlx_dpo.online.judges import load_judge
from mlx_dpo.online.loop import RoundReport
from mlx_dpo.settings import ONLINE_SAMPLING, OnlineSettings
from mlx_dpo.training.heldout import HELDOUT_DIR, kept_answers

WORKSPACE = Path("mlx-dpo-demo")
DATASETS = DEMO_PAIRS_PATH.parent
PROMPTS = DATASETS / "online_prompts.txt"  # questions the rounds sample and judge
HELDOUT = DATASETS / "online_heldout_prompts.txt"  # questions no round trains on: the score is measured here
JUDGE = "mlx_dpo.online.demo_judges:one_sentence"
QUESTION = "Why do stars twinkle?"  # a held-out question (tests check it stays held out)
# 3 rounds of 16 prompts x 4 answers, sampled 64 at a time (one batch: a decode step costs about the same for 64
# sequences as for 16 on a CPU, so a round's sampling takes as long as its longest answer).
ONLINE = OnlineSettings(rounds=3, per_round=16, sample_batch_size=64)
SAMPLER = ONLINE_SAMPLING
# The measurement, not the training: 25 held-out prompts x 2 answers = 50 samples, so one answer moves a mean score
# in [0, 1] by 0.02 at most. Everything else is the rounds' defaults.
RUN = dict(heldout_samples=2)
HELDOUT_PROMPTS = 25
SHOWN = 3  # held-out prompts shown before and after


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show_round(report: RoundReport) -> None:
    """A round's lines: what it judged and trained, its held-out numbers next to the base's, whether it was kept."""
    held = report.heldout
    print(
        f"round {report.round}: judged {report.prompts} prompts' answers from {report.sampled_by} "
        f"({report.pairs} pairs, {report.ties} ties, {report.skips} skips), trained {report.version or 'nothing'}",
        flush=True,
    )
    score, base, kl = held.get(HELDOUT_SCORE), held.get(base_key(HELDOUT_SCORE)), held.get(HELDOUT_KL)
    if score is not None and base is not None:
        print(
            f"  held-out judge score {score:.3f} (base {base:.3f}, {score - base:+.3f}), KL to base {kl:.2f} "
            f"nats/answer, repeated 3-grams {held.get(HELDOUT_REPETITION, 0):.2f} (base "
            f"{held.get(base_key(HELDOUT_REPETITION), 0):.2f}), cut at max tokens "
            f"{held.get(HELDOUT_UNFINISHED, 0):.2f} (base {held.get(base_key(HELDOUT_UNFINISHED), 0):.2f})",
            flush=True,
        )
    if report.decision:
        print(f"  {report.version} {report.decision}: {report.reason}", flush=True)


def _scores(judge, prompts: list, answers: list) -> list[float]:
    """The judge's own scores (no missing-end penalty: that only chooses pairs), sample by sample."""
    return [judge.raw_score(p, a) for p, group in zip(prompts, answers) for a in group]


def _cut(answers: list) -> float:
    flat = [a for group in answers for a in group]
    return sum(not a.finished for a in flat) / len(flat)


def _noise(values: list[float]) -> str:
    """A mean's standard error over its samples, and what one sample can move it by (scores in [0, 1])."""
    if len(values) < 2:
        return ""
    return f"± {statistics.stdev(values) / len(values) ** 0.5:.3f} (standard error over {len(values)} samples)"


def side_by_side(title: str, left: str, right: str, width: int = 58) -> str:
    """Two answers in two columns, wrapped."""
    a, b = textwrap.wrap(left, width) or [""], textwrap.wrap(right, width) or [""]
    rows = [f"{x:<{width}} | {y}" for x, y in zip(a + [""] * (len(b) - len(a)), b + [""] * (len(a) - len(b)))]
    return "\n".join([title, *rows])


def show_before_after(workspace: Path, judge, held_out: list, last: str | None, seconds: float) -> None:
    """The held-out scores by version with their noise, and base vs tuned answers side by side."""

    def kept(label: str) -> list:
        return kept_answers(json.loads((workspace / HELDOUT_DIR / f"{label}.json").read_text()))

    base = kept("base")
    base_scores = _scores(judge, held_out, base)
    say(
        f"held-out score, the judge's own ({len(held_out)} prompts, {len(base_scores)} samples; one sample moves it by "
        f"{1 / len(base_scores):.3f} at most; rounds took {seconds:.0f} s)"
    )
    print(f"  base  {statistics.mean(base_scores):.3f} {_noise(base_scores)}; cut at max tokens {_cut(base):.2f}")
    if last is None:
        print("  no round was kept: the base is what you have")
        return
    tuned = kept(last)
    tuned_scores = _scores(judge, held_out, tuned)
    gains = [t - b for t, b in zip(tuned_scores, base_scores)]  # same prompts, same draws' seeds: paired
    print(
        f"  {last:<5} {statistics.mean(tuned_scores):.3f} {_noise(tuned_scores)}; cut at max tokens {_cut(tuned):.2f}"
    )
    print(f"  gain  {statistics.mean(gains):+.3f} {_noise(gains)}, paired: same prompts, same draws' seeds")
    say(f"base and {last} side by side: the first sample for the first {SHOWN} held-out prompts (not chosen)")
    for i, prompt in enumerate(held_out[:SHOWN]):
        b, t = base[i][0], tuned[i][0]
        print(
            side_by_side(
                f"\nQ: {prompt[-1]['content']}",
                f"base (score {judge.raw_score(prompt, b):.2f}{'' if b.finished else ', cut'}): {b}",
                f"{last} (score {judge.raw_score(prompt, t):.2f}{'' if t.finished else ', cut'}): {t}",
            )
        )


def main(
    model: str | None = None,
    workspace: Path = WORKSPACE,
    online: OnlineSettings = ONLINE,
    sampler: SampleSettings = SAMPLER,
    run: dict | None = None,
    heldout_prompts: int = HELDOUT_PROMPTS,
    judge: str = JUDGE,
) -> int:
    """The demo; tests/test_demo.py passes a tiny `model`, one small round, fewer held-out prompts and a judge
    a random tiny model's answers do not all tie under."""
    run = {**RUN, **(run or {})}
    rep = doctor.report(measure=False)
    say(f"mlx-dpo {rep['mlx_dpo']} on {rep['device']}; BLAS: {rep['blas'].get('library')}")

    start = time.perf_counter()
    loaded = load_model(model)
    say(f"default model ready in {time.perf_counter() - start:.1f} s: {loaded.path}")
    name = judge.rsplit(":", 1)[1]
    say(
        f"{online.rounds} online rounds of {online.per_round} prompts x {online.samples_per_prompt} answers, judged by "
        f"{name}{' (answers in one sentence win)' if judge == JUDGE else ''}, every setting at its default, in "
        f"{workspace}/"
    )
    shutil.rmtree(workspace, ignore_errors=True)
    held_out = read_prompt_file(HELDOUT)[:heldout_prompts]
    start = time.perf_counter()
    reports = run_online(
        workspace,
        PROMPTS,
        judge,
        loaded=loaded,
        online=online,
        eval_prompts=held_out,
        sample_settings=sampler,
        settings=run,
        on_round=show_round,
    )
    last = next((r.version for r in reversed(reports) if r.version and r.decision == "accepted"), None)
    show_before_after(
        workspace,
        load_judge(judge, missing_end_penalty=online.missing_end_penalty),
        held_out,
        last,
        time.perf_counter() - start,
    )
    say(f"pairs and versions in {workspace}/ (try: mlx-dpo --workspace {workspace})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
