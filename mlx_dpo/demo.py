"""`make demo`: the main job end to end on the embedded default model, offline.

Converts SmolLM2-135M-Instruct from its GGUF on first use, answers a question, trains a short DPO
run on the preference set shipped with the package, and answers one prompt before and after.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from mlx_dpo import doctor
from mlx_dpo.api import train
from mlx_dpo.models.generate import answer, chat_messages
from mlx_dpo.models.load import load_model
from mlx_dpo.data.pairs import DEMO_PAIRS_PATH
from mlx_dpo.progress import ProgressPrinter

ADAPTER_DIR = Path("adapters/demo")
QUESTION = "What is the capital of France? Answer in one sentence."
# The demo pairs prefer answers that start with the answer over ones that open with filler.
STYLE_PROMPT = "What is the largest planet in our solar system?"
# Settings by their names in mlx_dpo.settings; the rest keep their defaults.
RUN = dict(iters=12, learning_rate=2e-4, lora_num_layers=8, steps_per_report=2, save_every=12)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main(model: str | None = None, adapter_dir: Path = ADAPTER_DIR, run: dict | None = None,
         data: Path = DEMO_PAIRS_PATH) -> int:
    """The demo; tests/test_demo.py passes a tiny `model`, a shorter `run` (overrides of RUN) and fewer pairs."""
    run = {**RUN, **(run or {})}
    rep = doctor.report(measure=False)
    say(f"mlx-dpo {rep['mlx_dpo']} on {rep['device']}; BLAS: {rep['blas'].get('library')}")

    start = time.perf_counter()
    loaded = load_model(model)
    say(f"default model ready in {time.perf_counter() - start:.1f} s: {loaded.path}")

    print(f"Q: {QUESTION}\nA: {answer(loaded, chat_messages(QUESTION), temp=0.0, max_tokens=40)}")
    before = answer(loaded, chat_messages(STYLE_PROMPT), temp=0.0, max_tokens=60)

    say(f"DPO on {data.name} ({run['iters']} steps, LoRA on the last {run['lora_num_layers']} layers)")
    shutil.rmtree(adapter_dir, ignore_errors=True)
    result = train(data, adapter_path=adapter_dir, loaded=loaded, on_event=ProgressPrinter(sys.stdout), **run)
    m = result.metrics
    print(f"last report: accuracy {m['rewards/accuracies']:.2f}, margin {m['rewards/margins']:.3f}, "
          f"reference cache {m['ref_cache/hits']} hits / {m['ref_cache/misses']} misses")

    after = answer(loaded, chat_messages(STYLE_PROMPT), temp=0.0, max_tokens=60)
    say(f"Q: {STYLE_PROMPT}")
    print(f"before: {before}\nafter:  {after}")
    say(f"adapter saved in {adapter_dir}/ (try: mlx-dpo generate --adapter-path {adapter_dir} --prompt ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
