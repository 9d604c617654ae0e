"""`make demo`: the model learns while a program judges it, on the embedded default model, offline.

Converts SmolLM2-135M-Instruct from its GGUF on first use, answers one question, then runs a few online
rounds (mlx_dpo.online.loop) in a fresh workspace: each round samples two answers to the next prompts of a
prompt file shipped with the package from the latest version, lets a judge shipped with the package choose
(`one_sentence`: an answer in one sentence beats a longer one, a preference anyone can see on screen),
stores the judged pairs and trains a round. After each round it prints the judge's mean score on held-out
prompts next to the base's, and the KL to the base; at the end the same question answered before and after.

The settings were chosen by experiment on the default model (benchmarks/online.py, its notes).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from mlx_dpo import doctor
from mlx_dpo.api import run_online
from mlx_dpo.data.pairs import DEMO_PAIRS_PATH
from mlx_dpo.data.prompt_file import read_prompt_file
from mlx_dpo.models.generate import SampleSettings, answer, chat_messages
from mlx_dpo.models.load import load_model, switch_adapter
from mlx_dpo.online.loop import RoundReport
from mlx_dpo.settings import OnlineSettings
from mlx_dpo.training.rounds import adapters_root

WORKSPACE = Path("mlx-dpo-demo")
DATASETS = DEMO_PAIRS_PATH.parent
PROMPTS = DATASETS / "online_prompts.txt"  # questions the rounds sample and judge
HELDOUT = DATASETS / "online_heldout_prompts.txt"  # questions no round trains on: the score is measured here
JUDGE = "mlx_dpo.online.demo_judges:one_sentence"
QUESTION = "Why do stars twinkle?"  # a held-out question, answered before and after
ONLINE = OnlineSettings(rounds=2, per_round=8)
SAMPLER = SampleSettings(temperature=0.8, max_tokens=32)
# Round settings by their names in mlx_dpo.settings; the rest keep their defaults.
RUN = dict(learning_rate=1e-3, beta=0.1, lora_num_layers=8, min_steps=6, heldout_samples=2)
HELDOUT_PROMPTS = 6


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show_round(report: RoundReport) -> None:
    """A round's line, and its held-out score next to the base's."""
    held = report.heldout
    score, base, kl = held.get("heldout/score"), held.get("heldout_base/score"), held.get("heldout/kl")
    print(f"round {report.round}: judged {report.prompts} prompts' answers from {report.sampled_by} "
          f"({report.pairs} pairs, {report.ties} ties), trained {report.version or 'nothing'}", flush=True)
    if score is not None:
        print(f"  held-out judge score {score:.3f} (base {base:.3f}), KL to base {kl:.2f} nats/answer",
              flush=True)


def main(model: str | None = None, workspace: Path = WORKSPACE, online: OnlineSettings = ONLINE,
         sampler: SampleSettings = SAMPLER, run: dict | None = None, heldout_prompts: int = HELDOUT_PROMPTS,
         judge: str = JUDGE) -> int:
    """The demo; tests/test_demo.py passes a tiny `model`, one small round, fewer held-out prompts and a judge
    a random tiny model's answers do not all tie under."""
    run = {**RUN, **(run or {})}
    rep = doctor.report(measure=False)
    say(f"mlx-dpo {rep['mlx_dpo']} on {rep['device']}; BLAS: {rep['blas'].get('library')}")

    start = time.perf_counter()
    loaded = load_model(model)
    say(f"default model ready in {time.perf_counter() - start:.1f} s: {loaded.path}")
    before = answer(loaded, chat_messages(QUESTION), temp=0.0, max_tokens=80)

    say(f"{online.rounds} online rounds of {online.per_round} prompts, judged by {judge.rsplit(':', 1)[1]}"
        f"{' (answers in one sentence win)' if judge == JUDGE else ''}, in {workspace}/")
    shutil.rmtree(workspace, ignore_errors=True)
    held_out = read_prompt_file(HELDOUT)[:heldout_prompts]
    start = time.perf_counter()
    reports = run_online(workspace, PROMPTS, judge, loaded=loaded, online=online, eval_prompts=held_out,
                         sample_settings=sampler, settings=run, on_round=show_round)
    say(f"held-out score by version ({len(held_out)} prompts, {run['heldout_samples']} answers each; "
        f"{time.perf_counter() - start:.0f} s)")
    if reports and reports[0].heldout.get("heldout_base/score") is not None:
        print(f"  base  {reports[0].heldout['heldout_base/score']:.3f}")
    for r in reports:
        if r.heldout.get("heldout/score") is not None:
            print(f"  {r.version:<5} {r.heldout['heldout/score']:.3f}")

    last = next((r.version for r in reversed(reports) if r.version), None)
    switch_adapter(loaded, adapters_root(workspace) / last if last else None)
    after = answer(loaded, chat_messages(QUESTION), temp=0.0, max_tokens=80)
    say(f"Q: {QUESTION}")
    print(f"base: {before}\n{last or 'base'}:   {after}")
    say(f"pairs and versions in {workspace}/ (try: mlx-dpo --workspace {workspace})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
