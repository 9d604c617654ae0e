"""GRPO against online DPO on the same judgments: one round from the base on the default model, several seeds.

    nice -n 10 .venv/bin/python benchmarks/grpo_vs_dpo.py run --seeds 1,2 --out benchmarks/results/grpo_vs_dpo.jsonl
    .venv/bin/python benchmarks/grpo_vs_dpo.py report --out benchmarks/results/grpo_vs_dpo.jsonl

For each seed: the first `--prompts` of the shipped online prompts, `--samples` answers each from the base (the
online sampler, ONLINE_SAMPLING, seeded by the seed), each answer scored once by the judge (`--judge`, a score
judge; the missing-end penalty 1 included). Then two arms train one round each from the base, on exactly those
answers and scores (the same judge calls, the same budget):

  dpo   each prompt's best answer against its worst (mlx_dpo.online.pairing, the online loop's rule), a DPO round
        with every round default (RPO anchor, β 0.1, learning rate 5e-5, 2 passes)
  grpo  each prompt's answers as a group with their scores (mlx_dpo.online.groups' way), a GRPO round with the same
        learning rate, batch size, passes and LoRA, GroupSettings' defaults (std advantages, per-sequence, ε 0.2,
        μ 1, β 0) unless `--grpo KEY=VALUE,...` says otherwise

Both rounds are measured by the rounds' own held-out check (training/heldout.py) on the first `--heldout` held-out
prompts × 2 samples (never trained on): the judge's mean score, the KL to the base (nats per answer), repeated
3-grams, the share cut at max tokens; `--accept always` so every version is measured. One JSON line per arm and
seed, with the seconds of each phase and the first held-out answers, is appended to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

from mlx_dpo import demo
from mlx_dpo.data.prompt_file import read_prompt_file
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.models.load import load_model
from mlx_dpo.online.groups import answer_tokens
from mlx_dpo.online.judges import load_judge
from mlx_dpo.online.loop import judge_and_store
from mlx_dpo.online.sampling import sample_answers
from mlx_dpo.settings import ONLINE_SAMPLING
from mlx_dpo.training.rounds import run_round

HELD = ("score", "kl", "repetition", "unfinished", "win_vs_base")


def _parse(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _arm(args, loaded, judge, seed: int, arm: str, prompts, answers, scores, held, base_dir: Path) -> dict:
    """Store the judged answers as the arm needs them, train one round, and return its line."""
    workspace = Path(args.work) / f"{arm}-s{seed}"
    shutil.rmtree(workspace, ignore_errors=True)
    if (base_dir / "heldout").is_dir():  # the base's held-out answers and numbers: measured once, for every arm
        shutil.copytree(base_dir / "heldout", workspace / "heldout")
    sampler = f"{loaded.name} base · seed {seed}"
    with PreferenceStore(workspace) as store:
        for prompt, group, rewards in zip(prompts, answers, scores):
            if arm == "dpo":
                judge_and_store(store, judge, prompt, group, sampler=sampler, version="base")
            else:
                store.ratings.add_group(
                    prompt,
                    group,
                    rewards,
                    rater=judge.name,
                    version="base",
                    sampler=sampler,
                    tokens=answer_tokens(loaded, prompt, group),
                )
    settings = {
        "seed": seed,
        "accept": "always",
        "heldout_samples": 2,
        **(_parse(args.grpo) if arm == "grpo" else {}),
        **({"method": "grpo"} if arm == "grpo" else {}),
    }
    loaded.use_adapter(None)
    start = time.perf_counter()
    result = run_round(
        workspace, loaded=loaded, settings=settings, eval_prompts=held, judge=judge, sample_settings=ONLINE_SAMPLING
    )
    seconds = time.perf_counter() - start
    if not (base_dir / "heldout").is_dir():
        shutil.copytree(workspace / "heldout", base_dir / "heldout")
        for path in (base_dir / "heldout").glob("v*.json"):
            path.unlink()
    m = result.metrics
    kept = json.loads((workspace / "heldout" / f"v{result.version}.json").read_text())["answers"]
    base = json.loads((base_dir / "heldout" / "base.json").read_text())["answers"]
    return {
        "arm": arm,
        "seed": seed,
        "judge": args.judge,
        "prompts": len(prompts),
        "samples": args.samples,
        "settings": {k: v for k, v in settings.items() if k != "seed"},
        "steps": m.get("steps"),
        "round_seconds": round(seconds, 1),
        "ref_pass_seconds": m.get("ref_pass_seconds"),
        **{f"heldout/{k}": m.get(f"heldout/{k}") for k in HELD},
        **{f"base/{k}": m.get(f"heldout_base/{k}") for k in HELD},
        "answers": [
            {"prompt": held[i][-1]["content"], "base": base[i][0], arm: kept[i][0]} for i in range(min(4, len(held)))
        ],
        "machine": f"{platform.machine()} {platform.system()}, 2 vCPU shared (nice 10)",
        "date": time.strftime("%Y-%m-%d"),
    }


def run(args) -> None:
    loaded = load_model(None)
    judge = load_judge(args.judge)
    prompts = read_prompt_file(demo.PROMPTS)[: args.prompts]
    held = read_prompt_file(demo.HELDOUT)[: args.heldout]
    base_dir = Path(args.work) / "base"
    for seed in [int(s) for s in args.seeds.split(",")]:
        start = time.perf_counter()
        samples = sample_answers(loaded, prompts, ONLINE_SAMPLING.with_seed(seed), n=args.samples, seed=1)
        scores = [[judge.score(p, a) for a in group] for p, group in zip(prompts, samples.answers)]
        sampled = time.perf_counter() - start
        print(f"seed {seed}: sampled and scored {len(prompts)} x {args.samples} in {sampled:.0f} s", flush=True)
        for arm in args.arms.split(","):
            line = _arm(args, loaded, judge, seed, arm, prompts, samples.answers, scores, held, base_dir)
            line["sampling_seconds"] = round(sampled, 1)
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps({k: v for k, v in line.items() if k != "answers"}), flush=True)


def report(args) -> None:
    lines = [json.loads(x) for x in Path(args.out).read_text().splitlines() if x.strip()]
    print(
        "| arm | seeds | score gain over the base | KL (nats/answer) | repeated 3-grams | unfinished | "
        "wins vs base | seconds per round |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for arm in dict.fromkeys(x["arm"] for x in lines):
        rows = [x for x in lines if x["arm"] == arm]

        def cell(values, sign="+"):
            values = [v for v in values if v is not None]
            if not values:
                return "–"
            mean = f"{statistics.mean(values):{sign}.3f}"
            return f"{mean} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean} (1 seed)"

        print(
            f"| {arm} | {len(rows)} | {cell([x['heldout/score'] - x['base/score'] for x in rows])} | "
            f"{cell([x['heldout/kl'] for x in rows], '-')} | {cell([x['heldout/repetition'] for x in rows], '-')} | "
            f"{cell([x['heldout/unfinished'] for x in rows], '-')} | "
            f"{cell([x['heldout/win_vs_base'] for x in rows], '-')} | {cell([x['round_seconds'] for x in rows], '-')} |"
        )
    if args.png:
        plot(lines, Path(args.png))


def plot(lines: list[dict], png: Path) -> None:
    """Held-out score gain against the KL to the base: one point per arm and seed (the base at the origin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    for i, arm in enumerate(dict.fromkeys(x["arm"] for x in lines)):
        rows = [x for x in lines if x["arm"] == arm]
        xs, ys = [x["heldout/kl"] for x in rows], [x["heldout/score"] - x["base/score"] for x in rows]
        ax.scatter(xs, ys, marker="os"[i % 2], color=f"C{i}", label=f"{arm} ({len(rows)} seeds)")
        for x, y, row in zip(xs, ys, rows):
            ax.annotate(f"seed {row['seed']}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.scatter([0], [0], marker="*", color="grey", label="base")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("KL to the base (nats per answer)")
    ax.set_ylabel("held-out score gain over the base")
    ax.set_title("GRPO vs DPO on the same judgments, one round", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seeds", default="1,2")
    r.add_argument("--arms", default="dpo,grpo")
    r.add_argument("--judge", default=demo.JUDGE)
    r.add_argument("--prompts", type=int, default=16)
    r.add_argument("--samples", type=int, default=4)
    r.add_argument("--heldout", type=int, default=12)
    r.add_argument("--grpo", default="", help="GRPO settings KEY=VALUE,... (e.g. learning_rate=1e-4)")
    r.add_argument("--work", default="/tmp/mlx-dpo-grpo-vs-dpo")
    r.add_argument("--out", default="benchmarks/results/grpo_vs_dpo.jsonl")
    q = sub.add_parser("report")
    q.add_argument("--out", default="benchmarks/results/grpo_vs_dpo.jsonl")
    q.add_argument("--png", help="also draw the score gain against the KL per arm and seed here")
    args = p.parse_args(argv)
    (run if args.cmd == "run" else report)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
