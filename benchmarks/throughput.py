"""Ablation of the DPO step's optimisations on the default model, in one run.

A fixed synthetic set (prompts of about 64 tokens, completions of about 64 tokens) is trained for
a few steps under each configuration, from the same starting adapter:
  plain                 two full sequences per pair, vocabulary logits everywhere, no compile
  +completion logits    vocabulary projection only at completion positions (chunked)
  +shared prompt        each prompt runs once under both completions
  full                  all of the above, and mx.compile of the step (the default)
  full -X               the default with one optimisation switched off
Prints JSON: pairs/s, completion tokens/s, peak memory, reference-pass time for each, and model-FLOPs
utilisation against the fp32 matmul rate measured in the same run.

    .venv/bin/python benchmarks/throughput.py [--steps 3] [--batch-size 4] [--lora-layers -1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import mlx_dpo  # noqa: F401  # optimized BLAS before mlx
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from mlx_dpo.adapter import LoraSettings, add_adapter, adapter_weights
from mlx_dpo.doctor import matmul_gflops
from mlx_dpo.models import load_model
from mlx_dpo.ref_cache import RefCache
from mlx_dpo.reference import reference_logps
from mlx_dpo.tokens import EncodedPair
from mlx_dpo.trainer import TrainingArgs, batch_inputs, make_step

CONFIGS = {
    "plain": dict(shared_prompt=False, full_logits=True, compile=False),
    "+completion logits": dict(shared_prompt=False, full_logits=False, compile=False),
    "+shared prompt": dict(shared_prompt=True, full_logits=False, compile=False),
    "full": dict(shared_prompt=True, full_logits=False, compile=True),
    "full -compile": dict(shared_prompt=True, full_logits=False, compile=False),
    "full -shared prompt": dict(shared_prompt=False, full_logits=False, compile=True),
    "full -completion logits": dict(shared_prompt=True, full_logits=True, compile=True),
}


def synthetic_pairs(tokenizer, n: int, prompt_len: int = 64, completion_len: int = 64, seed: int = 0) -> list[EncodedPair]:
    """Pairs of chat-formatted token ids with prompts and completions of about the given lengths."""
    rng = np.random.default_rng(seed)
    vocab = np.arange(200, 20000)  # ordinary tokens, no control tokens
    eos = tokenizer.eos_token_id
    head = list(tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], add_generation_prompt=True))
    pairs = []
    for i in range(n):
        p = head[:-6] + rng.choice(vocab, prompt_len - len(head) + rng.integers(-4, 5)).tolist() + head[-6:]
        c = rng.choice(vocab, completion_len + rng.integers(-8, 9)).tolist() + [eos]
        r = rng.choice(vocab, completion_len + rng.integers(-8, 9)).tolist() + [eos]
        pairs.append(EncodedPair(f"syn-{i}", tuple(p), tuple(c), tuple(r)))
    return pairs


def model_flops_per_pair(config: dict, pair: EncodedPair, vocab: int) -> float:
    """FLOPs the loss needs for one pair: forward and input-gradient backward (the base is frozen)."""
    d, n_layer, d_ff = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * config.get("head_dim", d // config["num_attention_heads"])
    per_token = 2 * n_layer * (2 * d * d + 2 * d * kv + 3 * d * d_ff)
    tokens = len(pair.prompt) + len(pair.chosen) + len(pair.rejected)
    head = 2 * d * vocab * (len(pair.chosen) + len(pair.rejected))
    return 2 * (per_token * tokens + head)  # backward (dX only) costs about what the forward does


def run_config(loaded, pairs, start_weights, settings: dict, steps: int, batch_size: int) -> dict:
    model = loaded.model
    model.load_weights(list(start_weights.items()), strict=False)
    args = TrainingArgs(batch_size=batch_size, learning_rate=1e-4, **settings)
    # Reference pass from an empty cache, timed.
    with tempfile.TemporaryDirectory() as tmp:
        cache = RefCache("bench", root=Path(tmp))
        mx.reset_peak_memory()
        ref, stats = reference_logps(model, pairs, cache, batch_size=2 * batch_size,
                                     shared_prompt=args.shared_prompt, full_logits=args.full_logits)
        cache.close()
    optimizer = optim.AdamW(learning_rate=args.learning_rate)
    step_fn = make_step(model, args)
    model.train()
    batches = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]

    def one_step(batch):
        arrays, _ = batch_inputs(args, batch, ref, model)
        (loss, _), grads = step_fn(*arrays)
        optimizer.update(model, grads)
        mx.eval(loss, model.trainable_parameters(), optimizer.state)
        return loss.item()

    one_step(batches[0])  # warm-up: compilation, allocator
    mx.reset_peak_memory()
    start = time.perf_counter()
    losses = [one_step(batches[(i + 1) % len(batches)]) for i in range(steps)]
    seconds = time.perf_counter() - start
    timed = [batches[(i + 1) % len(batches)] for i in range(steps)]
    n_pairs = sum(len(b) for b in timed)
    completion_tokens = sum(len(p.chosen) + len(p.rejected) for b in timed for p in b)
    model.eval()
    return {
        **settings,
        "pairs_per_second": n_pairs / seconds,
        "completion_tokens_per_second": completion_tokens / seconds,
        "seconds_per_step": seconds / steps,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
        "reference_pass_seconds": stats.seconds,
        "first_loss": losses[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--lora-layers", type=int, default=-1)
    parser.add_argument("--only", nargs="*", help="configuration names to run")
    a = parser.parse_args()

    loaded = load_model()
    pairs = synthetic_pairs(loaded.tokenizer, a.pairs)
    mx.random.seed(0)
    add_adapter(loaded.model, LoraSettings(rank=8, num_layers=a.lora_layers))
    start_weights = {k: mx.array(v) for k, v in adapter_weights(loaded.model).items()}
    rate = matmul_gflops()
    vocab = loaded.config["vocab_size"]
    flops_per_pair = sum(model_flops_per_pair(loaded.config, p, vocab) for p in pairs) / len(pairs)

    results = {}
    for name, settings in CONFIGS.items():
        if a.only and name not in a.only:
            continue
        r = run_config(loaded, pairs, start_weights, settings, a.steps, a.batch_size)
        r["mfu"] = r["pairs_per_second"] * flops_per_pair / (rate * 1e9)
        results[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
    out = {
        "benchmark": "throughput",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {mx.default_device()}",
        "model": "SmolLM2-135M-Instruct (default)",
        "batch_size": a.batch_size,
        "mean_prompt_tokens": sum(len(p.prompt) for p in pairs) / len(pairs),
        "mean_completion_tokens": sum(len(p.chosen) + len(p.rejected) for p in pairs) / (2 * len(pairs)),
        "lora_layers": a.lora_layers,
        "matmul_gflops": round(rate, 1),
        "model_gflops_per_pair": round(flops_per_pair / 1e9, 2),
        "configs": results,
    }
    if "plain" in results and "full" in results:
        out["speedup_full_over_plain"] = round(results["full"]["pairs_per_second"] / results["plain"]["pairs_per_second"], 2)
        out["peak_memory_full_over_plain"] = round(results["full"]["peak_memory_gb"] / results["plain"]["peak_memory_gb"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
