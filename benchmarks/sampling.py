"""Sampled tokens/s on the default model: the online sampler (`mlx_dpo.online.sampling.sample_answers`) with each
prompt prefilled once and shared by its answers, at several batch sizes, against the same sampler prefilling every
answer again, against llama.cpp (llama-cpp-python, one sequence at a time, on the shipped Q4_1 GGUF the default
model is converted from), and against this machine's compute bound.

Every configuration answers the same prompts (as token ids: the chat template rendered once) with the same budget:
`--answers` answers each, up to `--max-tokens` tokens, temperature `--temperature`, no top-p/top-k/min-p cut
(llama.cpp's top_k and min_p set to 0). Configurations run in interleaved rounds after a short warm-up, so a slow
spell on a shared machine hits all of them alike; each figure is the median over the timed rounds. Tokens are
generated tokens, end-of-sequence not counted; identical answers redrawn (sample_answers) count too.

The compute bound: the model's matmul FLOPs per generated token (2 x every linear layer's weights, the vocabulary
projection included; attention over the short context left out) against the fp32 matmul rate measured here at
the shape a 16-sequence decode step's MLP has and at a large one. Prints JSON.

    nice -n 10 .venv/bin/python benchmarks/sampling.py [--rounds 2] [--prompts 8] [--answers 2] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import mlx.nn as nn

from mlx_dpo.models.generate import SampleSettings, prompt_tokens
from mlx_dpo.models.load import default_gguf, load_model
from mlx_dpo.online.sampling import sample_answers

PROMPTS = [
    "Give me a tip for learning to cook.",
    "What is a prime number?",
    "Describe the sea in winter.",
    "How do I make my code easier to read?",
    "Why is the sky blue?",
    "Name a good book for a train ride.",
    "What should I pack for a day of hiking?",
    "Explain what a neural network is to a child.",
    "How can I sleep better?",
    "What is the difference between weather and climate?",
]


LLAMA = "llama.cpp, one sequence at a time (Q4_1 GGUF)"


def flops_per_token(model: nn.Module) -> float:
    """2 x the weights every generated token multiplies: the linear layers and the vocabulary projection."""
    inner = model.model
    linear = sum(m.weight.size for layer in inner.layers for _, m in layer.named_modules() if isinstance(m, nn.Linear))
    head = getattr(model, "lm_head", None)
    vocab = head.weight.size if head is not None else inner.embed_tokens.weight.size
    return 2.0 * (linear + vocab)


def matmul_gflops(m: int, k: int, n: int, repeats: int = 20) -> float:
    a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
    mx.eval(a, b)
    for _ in range(3):
        mx.eval(a @ b)
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def llama_cpp_run(llama, prompts: list[list[int]], answers: int, settings: SampleSettings, seed: int):
    """llama.cpp, one sequence at a time (its own sampler at the same temperature, nothing cut)."""
    start, tokens = time.perf_counter(), 0
    for i, ids in enumerate(prompts):
        for j in range(answers):
            out = llama.create_completion(
                prompt=ids,
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
                top_p=1.0,
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                seed=seed * 1000 + i * answers + j,
            )
            tokens += out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--answers", type=int, default=2, help="answers per prompt")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--no-llama-cpp", action="store_true", help="leave llama.cpp out")
    parser.add_argument(
        "--llama-threads",
        type=int,
        default=os.cpu_count(),
        help="llama.cpp's threads (on a machine others load, fewer threads than cores wait less)",
    )
    args = parser.parse_args()

    loaded = load_model()
    flops = flops_per_token(loaded.model)
    messages = [[{"role": "user", "content": text}] for text in (PROMPTS * 8)[: args.prompts]]
    settings = SampleSettings(temperature=args.temperature, max_tokens=args.max_tokens)
    sequences = args.prompts * args.answers
    configs = {f"shared prefill, batch {b}": (b, True) for b in args.batch_sizes}
    configs[f"prefill per answer, batch {max(args.batch_sizes)}"] = (max(args.batch_sizes), False)
    llama = None
    if not args.no_llama_cpp:
        import llama_cpp

        llama = llama_cpp.Llama(model_path=str(default_gguf()), n_ctx=512, n_threads=args.llama_threads, verbose=False)
        configs[LLAMA] = None
    rendered = [prompt_tokens(loaded.tokenizer, m) for m in messages]
    runs: dict[str, list[tuple[int, float, float]]] = {name: [] for name in configs}
    for round_ in range(args.rounds + 1):
        asked = slice(None) if round_ else slice(0, 1)  # round 0 warms each path up (first-call costs)
        for name, config in configs.items():
            cpu = time.process_time()
            if config is None:
                tokens, seconds = llama_cpp_run(llama, rendered[asked], args.answers, settings, round_)
            else:
                batch, shared = config
                samples = sample_answers(
                    loaded,
                    messages[asked],
                    settings,
                    n=args.answers,
                    seed=round_,
                    batch_size=batch,
                    shared_prefill=shared,
                )
                tokens, seconds = samples.tokens, samples.seconds
            if round_:
                runs[name].append((tokens, seconds, time.process_time() - cpu))
                print(f"round {round_}, {name}: {tokens} tokens in {seconds:.1f} s", file=sys.stderr, flush=True)
    # CPU seconds (all threads of this process) say what a run costs when others load the machine: wall time then
    # measures the share it got. llama.cpp's worker threads spin while they wait, so its CPU time counts waiting too.
    report = {
        name: {
            "tokens_per_s": round(statistics.median(t / s for t, s, _ in results), 1),
            "tokens_per_cpu_s": round(statistics.median(t / c for t, _, c in results), 1),
            "tokens": statistics.median(t for t, _, _ in results),
            "seconds": round(statistics.median(s for _, s, _ in results), 2),
        }
        for name, results in runs.items()
    }
    # A decode step's matmuls have as many rows as sequences in flight; the large shape is the BLAS's best here.
    rates = {
        f"{sequences}x576x1536": matmul_gflops(sequences, 576, 1536),
        "1024x576x1536": matmul_gflops(1024, 576, 1536),
    }
    best = max((r["tokens_per_s"], name) for name, r in report.items() if "llama" not in name)
    out = {
        "benchmark": "sampling",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": loaded.name,
        "prompts": args.prompts,
        "answers_per_prompt": args.answers,
        "max_tokens": args.max_tokens,
        "temperature": settings.temperature,
        "rounds": args.rounds,
        "llama_cpp_threads": args.llama_threads,
        "machine": f"{platform.system()} {platform.machine()} {os.cpu_count()} CPU",
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "results": report,
        "gflop_per_token": round(flops / 1e9, 3),
        "matmul_gflops": {k: round(v, 1) for k, v in rates.items()},
        "compute_bound_tokens_per_s": {k: round(v * 1e9 / flops, 1) for k, v in rates.items()},
        "best": best[1],
    }
    if llama is not None:
        cpp = report[LLAMA]["tokens_per_s"]
        out["best_vs_llama_cpp"] = round(best[0] / cpp, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
