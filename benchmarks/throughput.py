"""Ablation of the DPO step's optimisations on the default model (or --model), in one run.

A fixed synthetic set (prompts of about 64 tokens, completions of about 64 tokens) is trained for
whole epochs under each configuration, from the same starting adapter:
  plain                 pairs in data order, two full sequences per pair, every position projected
                        onto the vocabulary and log-softmaxed (as TRL does), no compile
  +length grouping      batches of pairs of similar length (the trainer's batch order)
  +completion logits    vocabulary projection only at completion positions (chunked)
  +shared prompt        each prompt runs once under both completions
  full                  all of the above, and mx.compile of the step (the default)
  full -X               the default with one optimisation switched off
  full +pack            the default with each batch's sequences packed side by side into rows (--pack),
                        which replaces the shared prompt (training/packed.py)
With `--data sampled` the pairs are the default model's own answers instead: two sampled answers to each
of the shipped online prompts, as a round samples them (`--max-tokens`), so lengths vary as in rounds;
each configuration then also reports the share of computed positions that are padding.
Configurations are timed in interleaved rounds (round 0 is a warm-up that also compiles every
shape), so a slow spell on a shared machine hits all of them alike; each figure is the median over
the timed rounds. Prints JSON: pairs/s, completion tokens/s, peak memory, reference-pass time for
each, and model-FLOPs utilisation against the fp32 matmul rate measured in the same run.

    .venv/bin/python benchmarks/throughput.py [--rounds 2] [--pairs 16] [--batch-size 4] [--only NAME ...]
                                              [--model gemma-3-270m-q4_k_m.gguf] [--data sampled --max-tokens 256]

A model without a chat template (a base model such as Gemma 3 270M) gets plain prompts: BOS, then tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from mlx_dpo.doctor import matmul_gflops
from mlx_dpo.models.adapter import LoraSettings, adapter_weights
from mlx_dpo.models.load import load_model
from mlx_dpo.settings import TrainingArgs
from mlx_dpo.training.batching import make_pair_batch, padding_share
from mlx_dpo.training.ref_cache import RefCache
from mlx_dpo.training.reference import reference_logps
from mlx_dpo.training.tokens import EncodedPair, has_chat_template
from mlx_dpo.training.trainer import epoch_batches, make_step

ON = dict(group=True, shared_prompt=True, full_logits=False, compile=True)
CONFIGS = {
    "plain": dict(group=False, shared_prompt=False, full_logits=True, compile=False),
    "+length grouping": dict(group=True, shared_prompt=False, full_logits=True, compile=False),
    "+completion logits": dict(group=True, shared_prompt=False, full_logits=False, compile=False),
    "+shared prompt": dict(group=True, shared_prompt=True, full_logits=False, compile=False),
    "full": ON,
    "full -compile": {**ON, "compile": False},
    "full -shared prompt": {**ON, "shared_prompt": False},
    "full -completion logits": {**ON, "full_logits": True},
    "full -length grouping": {**ON, "group": False},
    "full +pack": {**ON, "pack": True},
}


def synthetic_pairs(
    tokenizer, n: int, prompt_len: int = 64, completion_len: int = 64, seed: int = 0
) -> list[EncodedPair]:
    """Pairs of chat-formatted token ids with prompts and completions of about the given lengths."""
    rng = np.random.default_rng(seed)
    vocab = np.arange(200, 20000)  # ordinary tokens, no control tokens
    eos = tokenizer.eos_token_id
    if has_chat_template(tokenizer):
        head = list(tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], add_generation_prompt=True))
        before, after = head[:-6], head[-6:]
    else:  # a base model: its tokenizer's BOS, then the text
        before, after = tokenizer.encode("")[:1], []
    pairs = []
    for i in range(n):
        filler = rng.choice(vocab, prompt_len - len(before) - len(after) + rng.integers(-4, 5)).tolist()
        p = before + filler + after
        c = rng.choice(vocab, completion_len + rng.integers(-8, 9)).tolist() + [eos]
        r = rng.choice(vocab, completion_len + rng.integers(-8, 9)).tolist() + [eos]
        pairs.append(EncodedPair(f"syn-{i}", tuple(p), tuple(c), tuple(r)))
    return pairs


def sampled_pairs(loaded, n: int, max_tokens: int, seed: int = 0) -> list[EncodedPair]:
    """The model's own answers, two to each of the first `n` shipped online prompts, sampled as a round samples
    them (online/sampling.py), as pairs: lengths spread from a sentence to the token budget, as in rounds."""
    from dataclasses import replace

    from mlx_dpo import demo
    from mlx_dpo.data.pairs import PreferencePair
    from mlx_dpo.data.prompt_file import read_prompt_file
    from mlx_dpo.online.sampling import sample_answers
    from mlx_dpo.settings import ONLINE_SAMPLING
    from mlx_dpo.training.tokens import Encoder

    prompts = read_prompt_file(demo.PROMPTS)[:n]
    samples = sample_answers(loaded, prompts, replace(ONLINE_SAMPLING, max_tokens=max_tokens), n=2, seed=seed)
    pairs = [PreferencePair(f"s{i}", p, a, b) for i, (p, (a, b)) in enumerate(zip(prompts, samples.answers))]
    return Encoder(loaded.tokenizer).encode_all(pairs)[0]


def model_flops_per_pair(config: dict, pair: EncodedPair, vocab: int) -> float:
    """FLOPs the loss needs for one pair: forward and input-gradient backward (the base is frozen)."""
    d, n_layer, d_ff = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    head_dim = config.get("head_dim") or d // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    per_token = 2 * n_layer * (2 * d * q + 2 * d * kv + 3 * d * d_ff)  # q and o, k and v, the MLP
    tokens = len(pair.prompt) + len(pair.chosen) + len(pair.rejected)
    head = 2 * d * vocab * (len(pair.chosen) + len(pair.rejected))
    return 2 * (per_token * tokens + head)  # backward (dX only) costs about what the forward does


class Config:
    """One configuration's step function, batches and measurements."""

    def __init__(self, loaded, pairs, start_weights, settings: dict, batch_size: int):
        self.settings = settings
        self.model, self.checks, self.start_weights = loaded.model, loaded.checks, start_weights
        self.args = TrainingArgs(
            batch_size=batch_size, learning_rate=1e-4, **{k: v for k, v in settings.items() if k != "group"}
        )
        if settings["group"]:
            self.batches = [[pairs[i] for i in b] for b in epoch_batches(pairs, batch_size, seed=0, epoch=0)]
        else:
            self.batches = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
        self.step_fn = make_step(self.model, self.args, checks=self.checks)
        self.epoch_seconds: list[float] = []
        self.peak_memory = 0.0
        self.reference_seconds = self.reference_pass()

    def reference_pass(self) -> float:
        """Seconds for the reference pass over every pair from an empty cache; keeps the log-probs in `ref`."""
        self.model.load_weights(list(self.start_weights.items()), strict=False)
        pairs = [p for b in self.batches for p in b]
        with tempfile.TemporaryDirectory() as tmp:
            cache = RefCache("bench", root=Path(tmp))
            self.ref, stats = reference_logps(
                self.model,
                pairs,
                cache,
                batch_size=2 * self.args.batch_size,
                shared_prompt=self.args.shared_prompt,
                full_logits=self.args.full_logits,
                pack=self.args.pack,
                checks=self.checks,
            )
            cache.close()
        return stats.seconds

    def epoch(self, timed: bool) -> None:
        """Train one epoch from the starting adapter; a timed one records its seconds and peak memory."""
        model = self.model
        model.load_weights(list(self.start_weights.items()), strict=False)
        optimizer = optim.AdamW(learning_rate=self.args.learning_rate)
        model.train()
        mx.reset_peak_memory()
        start = time.perf_counter()
        for pairs in self.batches:
            (loss, _), grads = self.step_fn(self.step_fn.batch(pairs, self.ref))  # host packing is timed too
            optimizer.update(model, grads)
            mx.eval(loss, model.trainable_parameters(), optimizer.state)
        seconds = time.perf_counter() - start
        model.eval()
        if timed:  # the warm-up round also compiles and fills the allocator's cache
            self.epoch_seconds.append(seconds)
            self.peak_memory = max(self.peak_memory, mx.get_peak_memory() / 1e9)

    def result(self, flops_per_pair: float, matmul_gflops: float) -> dict:
        seconds = statistics.median(self.epoch_seconds)
        pairs = [p for b in self.batches for p in b]
        pairs_per_second = len(pairs) / seconds
        layout = self.step_fn.layout
        return {
            **self.settings,
            "layout": layout.name,
            "padding_share": statistics.mean(padding_share(make_pair_batch(b, layout)) for b in self.batches),
            "pairs_per_second": pairs_per_second,
            "completion_tokens_per_second": sum(len(p.chosen) + len(p.rejected) for p in pairs) / seconds,
            "seconds_per_step": seconds / len(self.batches),
            "epoch_seconds_per_round": [round(s, 2) for s in self.epoch_seconds],
            "peak_memory_gb": self.peak_memory,
            "reference_pass_seconds": self.reference_seconds,
            "mfu": pairs_per_second * flops_per_pair / (matmul_gflops * 1e9),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="timed epochs per configuration, after a warm-up epoch")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--lora-layers", type=int, default=-1)
    parser.add_argument("--only", nargs="*", help="configuration names to run")
    parser.add_argument("--model", default=None, help="a --model value (default: the embedded default model)")
    parser.add_argument("--data", choices=["synthetic", "sampled"], default="synthetic", help="see above")
    parser.add_argument("--max-tokens", type=int, default=256, help="--data sampled: each answer's token budget")
    a = parser.parse_args()
    if a.rounds < 1:
        parser.error("--rounds must be at least 1")

    loaded = load_model(a.model)
    if a.data == "sampled":
        pairs = sampled_pairs(loaded, a.pairs, a.max_tokens)
    else:
        pairs = synthetic_pairs(loaded.tokenizer, a.pairs)
    mx.random.seed(0)
    loaded.train_adapter(None, LoraSettings(rank=8, num_layers=a.lora_layers))
    start_weights = {k: mx.array(v) for k, v in adapter_weights(loaded.model).items()}
    rate = matmul_gflops()
    vocab = loaded.config["vocab_size"]
    flops_per_pair = sum(model_flops_per_pair(loaded.config, p, vocab) for p in pairs) / len(pairs)

    with tempfile.TemporaryDirectory() as tmp:  # one untimed pass: the first configuration pays no first-use costs
        cache = RefCache("warm-up", root=Path(tmp))
        reference_logps(loaded.model, pairs[: a.batch_size], cache, batch_size=a.batch_size, checks=loaded.checks)
        cache.close()
    configs = {
        name: Config(loaded, pairs, start_weights, settings, a.batch_size)
        for name, settings in CONFIGS.items()
        if not a.only or name in a.only
    }
    for round_ in range(a.rounds + 1):
        for config in configs.values():
            config.epoch(timed=round_ > 0)  # round 0 warms up (allocator, compiled shapes)
    results = {}
    for name, config in configs.items():
        r = config.result(flops_per_pair, rate)
        results[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
    out = {
        "benchmark": "throughput",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {mx.default_device()}",
        "model": a.model or "SmolLM2-135M-Instruct (default)",
        "vocab_size": vocab,
        "batch_size": a.batch_size,
        "pairs": len(pairs),
        "data": a.data if a.data == "synthetic" else f"sampled answers, max {a.max_tokens} tokens",
        "timed_rounds": a.rounds,
        "mean_prompt_tokens": sum(len(p.prompt) for p in pairs) / len(pairs),
        "mean_completion_tokens": sum(len(p.chosen) + len(p.rejected) for p in pairs) / (2 * len(pairs)),
        "lora_layers": a.lora_layers,
        "matmul_gflops": round(rate, 1),
        "model_gflops_per_pair": round(flops_per_pair / 1e9, 2),
        "configs": results,
    }
    if "plain" in results and "full" in results:
        out["speedup_full_over_plain"] = round(
            results["full"]["pairs_per_second"] / results["plain"]["pairs_per_second"], 2
        )
        out["peak_memory_full_over_plain"] = round(
            results["full"]["peak_memory_gb"] / results["plain"]["peak_memory_gb"], 3
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
