"""One online round's wall time and its breakdown on the default model, every speed-up on against every one off,
in one run on one machine.

A round as `mlx-dpo online` runs it (mlx_dpo.online.loop.run_online): `--prompts` prompts of the shipped online
prompt file, `--answers` answers each from the base, the one_sentence program judge, a training round with the
shipped round defaults, and the held-out measurement on `--heldout-prompts` held-out prompts. Each configuration
starts from a fresh workspace and an empty reference cache (the model is loaded and converted once, under a
benchmark home of its own: `--home`), with the same seeds, so both sample the same prompts.

The switches (each a flag and config key of `mlx-dpo online`):
  shared_prefill   each prompt prefilled once for all its answers (online/sampling.py)
  free_reference   the sampler's log-probs kept as the round's reference log-probs (online/free_reference.py)
  pack             the round's training batches packed side by side into rows (training/packed.py; off by default)
A warm-up round of 4 prompts runs first and is not reported: the first round in a process pays one-time costs
(allocations, first compiles) that would otherwise land on whichever configuration runs first.
The held-out measurement has no switch: its sampling prefills each prompt once and keeps its own log-probs for the
KL estimate in both configurations (training/heldout.py).

Prints JSON: per configuration the round's seconds (sampling, judging, reference, training, heldout, total), the
sampled tokens/s, and the Status lines the speed-ups wrote (how many reference values came free).

    nice -n 10 .venv/bin/python benchmarks/online_round.py [--prompts 16] [--answers 2] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

CONFIGS = {
    "all on": {"shared_prefill": True, "free_reference": True, "pack": False},  # the shipped defaults
    "all on +pack": {"shared_prefill": True, "free_reference": True, "pack": True},
    "all off": {"shared_prefill": False, "free_reference": False, "pack": False},
}


def one_round(loaded, home: Path, args, switches: dict, held: list) -> dict:
    from mlx_dpo import demo
    from mlx_dpo.events import Status
    from mlx_dpo.online.judges import load_judge
    from mlx_dpo.online.loop import run_online
    from mlx_dpo.settings import ONLINE_SAMPLING, OnlineSettings

    shutil.rmtree(home / "ref-cache", ignore_errors=True)  # every configuration starts without cached values
    workspace = Path(tempfile.mkdtemp(prefix="round-", dir=home))
    lines: list[str] = []

    def listen(event) -> None:
        if (
            isinstance(event, Status)
            and event.message.startswith(("sampling", "reference pass:", "log-probs"))
            and not event.total
        ):
            lines.append(event.message)

    sampling_switches = {k: v for k, v in switches.items() if k != "pack"}
    online = OnlineSettings(
        rounds=1,
        per_round=args.prompts,
        samples_per_prompt=args.answers,
        sample_batch_size=args.batch_size,
        **sampling_switches,
    )
    sample = replace(ONLINE_SAMPLING, seed=args.seed, max_tokens=args.max_tokens)
    start = time.perf_counter()
    [report] = run_online(
        workspace,
        demo.PROMPTS,
        load_judge("mlx_dpo.online.demo_judges:one_sentence"),
        loaded=loaded,
        online=online,
        sample_settings=sample,
        eval_prompts=held,
        settings={"seed": args.seed, "heldout_prompts": len(held), "pack": switches["pack"]},
        on_event=listen,
    )
    total = time.perf_counter() - start
    loaded.use_adapter(None)  # the round left its version on; its folder goes with the workspace
    shutil.rmtree(workspace, ignore_errors=True)
    return {
        "seconds": {**report.seconds, "total": round(total, 1)},
        "sampled_tokens_per_s": report.sampled_tokens_per_second,
        "pairs": report.pairs,
        "version": report.version,
        "decision": report.decision,
        "status_lines": lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--answers", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=96, help="ONLINE_SAMPLING's default")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences sampled together")
    parser.add_argument("--heldout-prompts", type=int, default=8, help="RoundSettings' default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--home", default="/tmp/mlx-dpo-bench-home", help="MLX_DPO_HOME for the run")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()

    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["MLX_DPO_HOME"] = str(home)
    from mlx_dpo import demo
    from mlx_dpo.data.prompt_file import read_prompt_file
    from mlx_dpo.models.load import load_model

    loaded = load_model(None)
    held = read_prompt_file(demo.HELDOUT)[: args.heldout_prompts]
    warm_up = argparse.Namespace(**{**vars(args), "prompts": 4})
    one_round(loaded, home, warm_up, CONFIGS["all off"], held[:2])  # not reported
    results = {}
    for name in args.configs:
        results[name] = one_round(loaded, home, args, CONFIGS[name], held)
        print(f"{name}: {json.dumps(results[name]['seconds'])}", file=sys.stderr, flush=True)
    out = {
        "benchmark": "online_round",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": loaded.name,
        "machine": f"{platform.system()} {platform.machine()} {os.cpu_count()} CPU",
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "prompts": args.prompts,
        "answers": args.answers,
        "max_tokens": args.max_tokens,
        "switches": CONFIGS,
        "results": results,
    }
    if "all on" in results and "all off" in results:
        out["speedup_total"] = round(results["all off"]["seconds"]["total"] / results["all on"]["seconds"]["total"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
