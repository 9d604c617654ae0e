"""Sampled tokens/s on the default model: one prompt at a time (the app's streaming path) against mlx-lm's
batched generation (`mlx_dpo.online.sampling.sample_answers`) at several batch sizes.

Every configuration answers the same prompts (two answers each, as an online round samples them) with the
same sampler settings. Configurations run in interleaved rounds after a short warm-up (one prompt each), so a
slow spell on a shared machine hits all of them alike; each figure is the median over the timed rounds.
Tokens are generated tokens (redraws of identical answers included, end-of-sequence not). Prints JSON.

    .venv/bin/python benchmarks/sampling.py [--rounds 2] [--prompts 8] [--max-tokens 24] [--batch-sizes 1 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import mlx_dpo  # noqa: F401  # optimized BLAS before mlx

from mlx_dpo.models.generate import SampleSettings, prompt_tokens, sampler_for
from mlx_dpo.models.load import load_model
from mlx_dpo.online.sampling import sample_answers

PROMPTS = ["Give me a tip for learning to cook.", "What is a prime number?", "Describe the sea in winter.",
           "How do I make my code easier to read?", "Why is the sky blue?", "Name a good book for a train ride.",
           "What should I pack for a day of hiking?", "Explain what a neural network is to a child.",
           "How can I sleep better?", "What is the difference between weather and climate?"]


def streamed(loaded, prompts, settings: SampleSettings, n: int) -> tuple[int, float]:
    """The app's path: each answer streamed alone (stream_generate), one after another."""
    from mlx_lm import stream_generate

    start, tokens = time.perf_counter(), 0
    for messages in prompts:
        ids = prompt_tokens(loaded.tokenizer, messages)
        for _ in range(n):
            sampler = sampler_for(settings.temperature, settings.top_p)
            for response in stream_generate(loaded.model, loaded.tokenizer, ids, max_tokens=settings.max_tokens,
                                            sampler=sampler):
                tokens += 1 if response.finish_reason != "stop" else 0
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()

    loaded = load_model()
    prompts = [[{"role": "user", "content": text}] for text in (PROMPTS * 4)[:args.prompts]]
    settings = SampleSettings(temperature=0.7, max_tokens=args.max_tokens)
    configs = {"streamed, one at a time": None, **{f"batched {b}": b for b in args.batch_sizes}}
    runs: dict[str, list[tuple[int, float]]] = {name: [] for name in configs}
    for round_ in range(args.rounds + 1):
        asked = prompts if round_ else prompts[:1]  # round 0 warms each path up (first-call costs)
        for name, batch in configs.items():
            if batch is None:
                result = streamed(loaded, asked, settings, 2)
            else:
                samples = sample_answers(loaded, asked, settings, n=2, seed=round_, batch_size=batch)
                result = (samples.tokens, samples.seconds)
            if round_:
                runs[name].append(result)
    report = {name: {"tokens_per_s": round(statistics.median(t / s for t, s in results), 2),
                     "tokens": statistics.median(t for t, _ in results),
                     "seconds": round(statistics.median(s for _, s in results), 2)}
              for name, results in runs.items()}
    print(json.dumps({
        "benchmark": "sampling", "model": loaded.name, "prompts": args.prompts, "answers_per_prompt": 2,
        "max_tokens": args.max_tokens, "temperature": settings.temperature, "rounds": args.rounds,
        "machine": f"{platform.system()} {platform.machine()} {os.cpu_count()} CPU",
        "load_average": [round(x, 1) for x in os.getloadavg()], "results": report,
    }, indent=2))


if __name__ == "__main__":
    main()
