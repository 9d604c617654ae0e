"""Online rounds vs offline DPO at laptop scale, over judges and seeds: the experiment behind the rounds' defaults.

    .venv/bin/python benchmarks/online.py run --judges one_sentence,asks_question,held_back --seeds 1,2,3 \\
        --arms online,offline --out benchmarks/results/online.jsonl
    .venv/bin/python benchmarks/online.py report --out benchmarks/results/online.jsonl \
        --png benchmarks/online_frontier.png

The DPO paper's controlled-generation experiment (reward reached against the KL to the reference), small: the
default model (SmolLM2-135M-Instruct), the shipped online prompts, a program judge as the reward, and two arms
with the same judge, the same number of judged prompts, the same rounds and the same held-out measurement
(training/heldout.py; the held-out prompts are never trained on):

  online   mlx_dpo.online.loop: each round samples its prompts' answers from the last accepted version
  offline  the same prompts' answers all sampled once from the base, judged, and trained in the same rounds

Round 1 is the same in both arms by construction (both sample the same prompts from the base with the same seed),
so the offline arm starts from a copy of the online arm's workspace after round 1 (its round 1 is not run twice).

Every setting is the shipped default (mlx_dpo.settings: RoundSettings, OnlineSettings, ONLINE_SAMPLING, and
ROUND_DEFAULTS for what a round sets differently from `train`), except what `--plan NAME=key:value,...` changes
(the sweep that chose the defaults). A seed s sets the training seed and the sampler's seed (round and held-out
draws). Judges: one_sentence and asks_question (mlx_dpo.online.demo_judges) and held_back
(benchmarks/judges.py:addresses_reader, declared before tuning and never used to choose a setting).

Output: one JSON line per trained version, appended to --out as each round ends (score, KL, degeneration figures,
decision, seconds, and the first held-out answers), so a killed command loses at most the round in progress; a run
(arm, judge, seed, plan) already complete in --out is skipped when the command runs again.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

from mlx_dpo import demo
from mlx_dpo.data.prompt_file import read_prompt_file
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.models.load import load_model
from mlx_dpo.online.judges import load_judge
from mlx_dpo.online.loop import judge_and_store, run_online
from mlx_dpo.online.sampling import sample_answers
from mlx_dpo.settings import ONLINE_SAMPLING, OnlineSettings
from mlx_dpo.training.heldout import HeldoutSet
from mlx_dpo.training.rounds import run_round

HERE = Path(__file__).resolve().parent
JUDGES = {
    "one_sentence": "mlx_dpo.online.demo_judges:one_sentence",
    "asks_question": "mlx_dpo.online.demo_judges:asks_question",
    "held_back": f"{HERE / 'judges.py'}:addresses_reader",
}
HELD = ("score", "kl", "win_vs_previous", "win_vs_base", "repetition", "unfinished", "samples", "accuracy")
SAMPLER_KEYS = ("temperature", "max_tokens", "top_p")
ONLINE_KEYS = ("samples_per_prompt", "missing_end_penalty", "per_round", "rounds")


def parse_plan(text: str) -> tuple[str, dict]:
    """ "lr_2e-4=learning_rate:2e-4,passes:1" -> ("lr_2e-4", {"learning_rate": 2e-4, "passes": 1.0})."""
    name, _, body = text.partition("=")
    changes = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        try:
            changes[key] = float(value) if key not in ("accept", "loss_type", "reference") else value
        except ValueError:
            changes[key] = value
        if key in ("max_tokens", "samples_per_prompt", "per_round", "rounds") or key.endswith("steps"):
            changes[key] = int(float(value))
    return name or "default", changes


class Run:
    """One arm, judge, seed and plan: its settings and the rows it has written."""

    def __init__(self, args, arm: str, judge: str, seed: int, plan: str, changes: dict):
        self.arm, self.judge_name, self.seed, self.plan = arm, judge, seed, plan
        self.judge = load_judge(
            JUDGES[judge], missing_end_penalty=changes.get("missing_end_penalty", OnlineSettings().missing_end_penalty)
        )
        online = {k: changes[k] for k in ONLINE_KEYS if k in changes}
        self.online = OnlineSettings(
            **{"rounds": args.rounds, "per_round": args.per_round, "sample_batch_size": 64, **online}
        )
        self.sample = replace(ONLINE_SAMPLING, seed=seed, **{k: changes[k] for k in SAMPLER_KEYS if k in changes})
        self.settings = {
            "seed": seed,
            "heldout_samples": args.heldout_samples,
            "heldout_prompts": args.heldout_prompts,
            **{k: v for k, v in changes.items() if k not in ONLINE_KEYS + SAMPLER_KEYS},
        }
        self.key = {"arm": arm, "judge": judge, "seed": seed, "plan": plan}

    def row(
        self, number: int, report_heldout: dict, decision, reason, seconds: float, workspace: Path, version: str | None
    ) -> dict:
        row = {
            **self.key,
            "round": number,
            "version": version,
            "decision": decision,
            "reason": reason,
            **{k: report_heldout.get(f"heldout/{k}") for k in HELD},
            **{f"base_{k}": report_heldout.get(f"heldout_base/{k}") for k in ("score", "repetition", "unfinished")},
            "seconds": round(seconds, 1),
            "score_kind": "raw",
            "answers": first_answers(workspace, version),
        }
        return row


def first_answers(workspace: Path, label: str | None, count: int = 3) -> list[str]:
    """The first sample of the first `count` held-out prompts of a version (for before/after in the README)."""
    try:
        kept = json.loads((workspace / "heldout" / f"{label or 'base'}.json").read_text())
    except (OSError, ValueError):
        return []
    return [group[0] for group in kept.get("answers", [])[:count]]


def write(out: Path, row: dict) -> None:
    print(json.dumps({k: v for k, v in row.items() if k != "answers"}), flush=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


def share_base(run: Run, workspace: Path, held: list, cache: Path, back: bool = False) -> None:
    """Base samples depend on the seed and the sampler, not the judge: sampled once, copied between runs."""
    key = HeldoutSet(workspace, held, [], None, run.sample, run.settings["heldout_samples"]).key
    kept, there = cache / f"base-{key}.json", workspace / "heldout" / "base.json"
    if back and there.exists():
        cache.mkdir(parents=True, exist_ok=True)
        merged = json.loads(there.read_text())
        if kept.exists():  # keep every judge's base numbers
            merged["metrics"] = {**json.loads(kept.read_text()).get("metrics", {}), **merged.get("metrics", {})}
        kept.write_text(json.dumps(merged))
    elif not back and kept.exists():
        there.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(kept, there)


def online_arm(loaded, run: Run, work: Path, held: list, out: Path, snapshot: Path | None) -> None:
    workspace, start = work / "online", time.perf_counter()
    share_base(run, workspace, held, work.parent / "base-cache")

    def on_round(r) -> None:
        write(out, run.row(r.round, r.heldout, r.decision, r.reason, time.perf_counter() - start, workspace, r.version))
        if r.round == 1 and snapshot is not None:
            shutil.copytree(workspace, snapshot)

    run_online(
        workspace,
        demo.PROMPTS,
        run.judge,
        loaded=loaded,
        online=run.online,
        eval_prompts=held,
        sample_settings=run.sample,
        settings=run.settings,
        on_round=on_round,
    )
    share_base(run, workspace, held, work.parent / "base-cache", back=True)


def offline_arm(loaded, run: Run, work: Path, held: list, out: Path, online_rows: list[dict]) -> None:
    """Round 1 is the online arm's (a copy of its workspace, when the online arm ran in this command; else run
    again, the same by construction); later rounds judge base samples of the same prompts."""
    workspace, start = work / "offline", time.perf_counter()
    copied = workspace.exists()
    if copied:
        first = next(r for r in online_rows if r["round"] == 1)
        write(out, {**first, "arm": "offline"})
    else:
        share_base(run, workspace, held, work.parent / "base-cache")
    prompts = read_prompt_file(demo.PROMPTS)
    k = run.online.per_round
    for number in range(2 if copied else 1, run.online.rounds + 1):
        todo = prompts[(number - 1) * k : number * k]
        with loaded.base():
            samples = sample_answers(
                loaded,
                todo,
                run.sample,
                n=run.online.samples_per_prompt,
                seed=number,
                batch_size=run.online.sample_batch_size,
            )
        with PreferenceStore(workspace) as store:
            for prompt, answers in zip(todo, samples.answers):
                judge_and_store(store, run.judge, prompt, answers, sampler="base (offline)", version="base")
            if not store.untrained_pairs():
                continue
        result = run_round(
            workspace,
            settings=run.settings,
            loaded=loaded,
            eval_prompts=held,
            judge=run.judge,
            sample_settings=run.sample,
        )
        write(
            out,
            run.row(
                number,
                result.metrics,
                result.decision,
                result.reason,
                time.perf_counter() - start,
                workspace,
                f"v{result.version}",
            ),
        )


def done(out: Path) -> dict[tuple, list[dict]]:
    rows: dict[tuple, list[dict]] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            rows.setdefault((row["arm"], row["judge"], row["seed"], row["plan"]), []).append(row)
    return rows


def cmd_run(args) -> None:
    out, work_root = Path(args.out), Path(args.work)
    out.parent.mkdir(parents=True, exist_ok=True)
    held = read_prompt_file(demo.HELDOUT)[: args.heldout_prompts]
    loaded = load_model(None)
    plans = [parse_plan(p) for p in args.plan] or [("default", {})]
    for name, changes in plans:
        for judge in args.judges.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                finished = done(out)
                arms = [a for a in args.arms.split(",") if len(finished.get((a, judge, seed, name), [])) < args.rounds]
                if not arms:
                    continue
                work = work_root / f"{name}-{judge}-{seed}"
                shutil.rmtree(work, ignore_errors=True)
                run = Run(args, "online", judge, seed, name, changes)
                online_rows = finished.get(("online", judge, seed, name), [])
                if len(online_rows) < args.rounds:
                    online_arm(loaded, run, work, held, out, work / "offline" if "offline" in arms else None)
                    online_rows = done(out).get(("online", judge, seed, name), [])
                if "offline" in arms:
                    run.arm = "offline"
                    run.key["arm"] = "offline"
                    offline_arm(loaded, run, work, held, out, online_rows)
                loaded.use_adapter(None)  # the last version's folder goes with the workspace: the base goes back on
                shutil.rmtree(work, ignore_errors=True)


# --- the report ----------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    """ "mean ± sd (n)": the sample standard deviation over seeds; one value alone has none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:+.3f} (1 seed)"
    return f"{statistics.mean(values):+.3f} ± {statistics.stdev(values):.3f} ({len(values)} seeds)"


def as_raw(row: dict) -> dict:
    """Rows written before the held-out score became the judge's own carry the missing-end penalty (1 then) in
    their scores: add it back (score + penalty x share cut), so every row reads the judge's own score."""
    if row.get("score_kind") == "raw" or row.get("score") is None:
        return row
    return {
        **row,
        "score": row["score"] + row["unfinished"],
        "base_score": row["base_score"] + row["base_unfinished"],
        "score_kind": "raw",
    }


def cmd_report(args) -> None:
    rows = [as_raw(json.loads(line)) for line in Path(args.out).read_text().splitlines()]
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["plan"], r["judge"], r["arm"]), {}).setdefault(r["seed"], []).append(r)
    print(
        "| plan | judge | arm | score gain over the base (last accepted) | KL (nats/answer) | repeated 3-grams | "
        "unfinished | rounds rejected |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (plan, judge, arm), seeds in sorted(groups.items()):
        gains, kls, reps, unfinished, rejected = [], [], [], [], 0
        for seed_rows in seeds.values():
            kept = [r for r in sorted(seed_rows, key=lambda r: r["round"]) if r["decision"] != "rejected"]
            rejected += sum(r["decision"] == "rejected" for r in seed_rows)
            last = kept[-1] if kept else None
            base = seed_rows[0]
            gains.append(last["score"] - last["base_score"] if last and last["score"] is not None else 0.0)
            kls.append(last["kl"] if last else 0.0)
            reps.append(last["repetition"] if last else base["base_repetition"])
            unfinished.append(last["unfinished"] if last else base["base_unfinished"])
        print(
            f"| {plan} | {judge} | {arm} | {spread(gains)} | {spread(kls).replace('+', '')} | "
            f"{spread(reps).replace('+', '')} | {spread(unfinished).replace('+', '')} | {rejected} |"
        )
    print(
        "\n| plan | judge | arm | round | score gain over the base | KL (nats/answer) | repeated 3-grams | "
        "unfinished (base) | kept |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (plan, judge, arm), seeds in sorted(groups.items()):
        for number in sorted({r["round"] for rs in seeds.values() for r in rs}):
            at = [r for rs in seeds.values() for r in rs if r["round"] == number]
            kept = sum(r["decision"] != "rejected" for r in at)
            print(
                f"| {plan} | {judge} | {arm} | {number} | {spread([r['score'] - r['base_score'] for r in at])} | "
                f"{spread([r['kl'] for r in at]).replace('+', '')} | "
                f"{spread([r['repetition'] for r in at]).replace('+', '')} | "
                f"{spread([r['unfinished'] for r in at]).replace('+', '')} "
                f"({spread([r['base_unfinished'] for r in at]).replace('+', '')}) | {kept}/{len(at)} |"
            )
    if args.png:
        plot([r for r in rows if r["plan"] == args.plan], Path(args.png))


def plot(rows: list[dict], png: Path) -> None:
    """Held-out score gain against the KL to the base, every version of both arms (one panel per judge), one plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judges = sorted({r["judge"] for r in rows})
    fig, axes = plt.subplots(1, len(judges), figsize=(4.2 * len(judges), 3.6), squeeze=False)
    for ax, judge in zip(axes[0], judges):
        for arm, marker in (("online", "o"), ("offline", "s")):
            mine = [r for r in rows if r["judge"] == judge and r["arm"] == arm]
            for seed in sorted({r["seed"] for r in mine}):
                seq = sorted((r for r in mine if r["seed"] == seed), key=lambda r: r["round"])
                xs = [0.0] + [r["kl"] for r in seq]
                ys = [0.0] + [r["score"] - r["base_score"] for r in seq]
                ax.plot(
                    xs,
                    ys,
                    marker=marker,
                    linestyle="-" if arm == "online" else "--",
                    color="C0" if arm == "online" else "C1",
                    alpha=0.8,
                    label=arm if seed == min(r["seed"] for r in mine) else None,
                )
                for r, x, y in zip(seq, xs[1:], ys[1:]):
                    if r["decision"] == "rejected":
                        ax.plot([x], [y], marker="x", color="red", markersize=9)
        ax.set_title(judge)
        ax.set_xlabel("KL to the base (nats per answer)")
        ax.set_ylabel("held-out score (judge's own) - base's")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.legend()
    fig.suptitle("held-out score gain vs KL, every version (x: rejected)", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--judges", default="one_sentence,asks_question,held_back")
    run.add_argument("--seeds", default="1,2,3")
    run.add_argument("--arms", default="online,offline")
    run.add_argument("--plan", action="append", default=[], help="NAME=key:value,... (settings changed)")
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--per-round", type=int, default=16)
    run.add_argument("--heldout-prompts", type=int, default=25)
    run.add_argument("--heldout-samples", type=int, default=2)
    run.add_argument("--out", default=str(HERE / "results" / "online.jsonl"))
    run.add_argument("--work", default="/tmp/mlx-dpo-online-bench")
    report = sub.add_parser("report")
    report.add_argument("--out", default=str(HERE / "results" / "online.jsonl"))
    report.add_argument("--png")
    report.add_argument("--plan", default="default", help="the plan the PNG draws")
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "processor": platform.processor() or platform.platform(),
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "argv": sys.argv[1:],
            }
        ),
        flush=True,
    )
    (cmd_run if args.command == "run" else cmd_report)(args)


if __name__ == "__main__":
    main()
