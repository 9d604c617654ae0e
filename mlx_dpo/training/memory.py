"""Will the run fit? An estimate of a training step's peak memory, checked before the reference pass.

A run that needs more memory than the machine has does not fail cleanly: a Mac swaps itself to a halt,
Linux's OOM killer ends the process, a failed allocation can end it with a segmentation fault. So before
the first forward pass the peak of the largest micro-batch is estimated from the model's shapes and the
token counts of the longest pairs (no probe step: the estimate costs nothing, and a probe of a batch that
does not fit is the very failure this prevents). The measured peak of the run is in every step report
(`peak_memory_gb`), so the estimate can be checked against it (benchmarks/memory.py).

The estimate counts, for the step with gradients:
  - the model's arrays as loaded, and the adapter's weights with their gradients and Adam moments;
  - what the backward pass keeps per layer and token: the inputs of the norms, projections and MLP
    (ACTIVATION_VALUES_PER_TOKEN hidden-sized and INTERMEDIATE_VALUES_PER_TOKEN intermediate-sized
    values), and each head's attention scores and probabilities over the sequence (2 x heads x L^2);
    with --grad-checkpoint only each layer's input is kept, plus one layer recomputed at a time;
  - the vocabulary projection of the answer positions (every position with --full-logits): logits,
    log-softmax and their gradient, all kept for the backward pass, and three more copies when the step is
    compiled (measured on Gemma 3 270M's 262k-wide vocabulary with short answers: the compiled step peaked
    up to 2.8 copies above the three, which matters where the vocabulary dominates); the reference pass
    (forward only, twice the pairs) holds one chunk of positions at a time (logprobs.VOCAB_CHUNK);
  - a fixed SMALL_BUFFERS for the optimizer's and the allocator's small arrays.
It errs high (every sequence is counted at the longest pair's length, the attention scores as if
materialised), so a run it lets through fits; one it stops may have fitted just. The limit is Metal's
recommended working set, a CUDA device's free memory, or the system's available memory on CPU
(/proc/meminfo MemAvailable on Linux, physical memory on macOS), plus what this process already holds.
MLX_DPO_MEMORY_LIMIT (bytes, or with a unit: "512MB", "8GB") sets the limit instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.settings import LoraSettings, TrainingArgs
from mlx_dpo.training import distributed
from mlx_dpo.training.logprobs import VOCAB_CHUNK
from mlx_dpo.training.tokens import EncodedPair

LIMIT_ENV = "MLX_DPO_MEMORY_LIMIT"
ACTIVATION_VALUES_PER_TOKEN = 12  # per layer: norm inputs, q/k/v/o inputs and outputs, residuals
INTERMEDIATE_VALUES_PER_TOKEN = 4  # per layer: gate, up, the activation and its product
LOGIT_COPIES = 3  # logits, log-softmax, their gradient
COMPILED_LOGIT_COPIES = 6  # the compiled step keeps more of them alive (see above)
SMALL_BUFFERS = 128 * 10**6
ADAPTER_COPIES = 4  # weights, gradients, Adam's two moments
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


@dataclass(frozen=True)
class MemoryEstimate:
    total: int  # bytes at the peak of the largest micro-batch's training step
    weights: int  # of which the model's arrays as loaded
    batch: str  # the largest micro-batch, in words: "4 pairs, prompt 512 + answer 512 tokens"


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    source: str  # where the figure comes from, for the message


def gb(n: int) -> str:
    """Bytes for a person: "1.25 GB", or "310 MB" under a gigabyte."""
    return f"{n / 1e9:.2f} GB" if n >= 10**9 else f"{n / 1e6:.0f} MB"


def parse_size(text: str) -> int:
    """ "8GB", "512 MiB", "1000000" -> bytes; MlxDpoError naming MLX_DPO_MEMORY_LIMIT otherwise."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or not unit or float(match.group(1)) <= 0:
        raise MlxDpoError(f"{LIMIT_ENV}={text!r}: expected a size such as 8GB, 512MB or a number of bytes")
    return int(float(match.group(1)) * unit)


def _available_system_memory() -> tuple[int, str] | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available memory (/proc/meminfo MemAvailable)"
    try:  # macOS: no "available" figure through sysconf; physical memory is the ceiling
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    except (ValueError, OSError, AttributeError):
        return None


def device_limit(environ: Mapping[str, str] = os.environ) -> MemoryLimit | None:
    """The memory this run may use: the override, the GPU's figure, or the system's available memory."""
    if environ.get(LIMIT_ENV):
        return MemoryLimit(parse_size(environ[LIMIT_ENV]), LIMIT_ENV)
    held = mx.get_active_memory()  # already ours (the loaded model), and counted in the estimate
    if mx.default_device() == mx.gpu:
        info = mx.device_info()
        for key, what in (
            ("max_recommended_working_set_size", "Metal's recommended working set"),
            ("free_memory", "the GPU's free memory"),
            ("memory_size", "the GPU's memory"),
            ("total_memory", "the GPU's memory"),
        ):
            if info.get(key):
                return MemoryLimit(int(info[key]) + (held if key == "free_memory" else 0), what)
    system = _available_system_memory()
    return MemoryLimit(system[0] + held, system[1]) if system else None


def _dims(model: nn.Module, config: Mapping) -> tuple[int, int, int, int, int]:
    """(layers, hidden, intermediate, heads, vocab), from the config with the model's own shapes as fallback."""
    text = {**config, **(config.get("text_config") or {})}
    layers = len(getattr(model, "layers", None) or getattr(getattr(model, "model", None), "layers", []) or []) or 1
    hidden = int(text.get("hidden_size") or text.get("n_embd") or text.get("d_model") or 1024)
    intermediate = int(text.get("intermediate_size") or text.get("ffn_dim") or 4 * hidden)
    heads = int(text.get("num_attention_heads") or text.get("n_head") or max(1, hidden // 64))
    vocab = int(text.get("vocab_size") or 32000)
    return layers, hidden, intermediate, heads, vocab


def _adapter_bytes(model: nn.Module, lora: LoraSettings, layers: int) -> int:
    """The adapter's weights: rank x (in + out) per adapted linear layer of the last `num_layers` blocks."""
    blocks = layers if lora.num_layers == -1 else min(lora.num_layers, layers)
    per_block = 0
    first = (getattr(model, "layers", None) or [None])[0]
    for name, module in first.named_modules() if first is not None else []:
        if isinstance(module, (nn.Linear, nn.QuantizedLinear)) and (lora.keys is None or name in lora.keys):
            out_dim, in_dim = module.weight.shape
            if isinstance(module, nn.QuantizedLinear):
                in_dim = in_dim * 32 // module.bits
            per_block += lora.rank * (in_dim + out_dim)
    return blocks * per_block * 4 * ADAPTER_COPIES  # fp32


def _activation_bytes(model: nn.Module) -> int:
    """Bytes per activation value: the width of the model's floating arrays (fp32 on CPU, bf16/fp16 on GPUs)."""
    sizes = [v.dtype.size for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating)]
    return max(sizes, default=4)


def largest_batch(pairs: Sequence[EncodedPair], batch_size: int) -> tuple[int, int, int]:
    """(pairs, longest prompt, longest answer) of the worst micro-batch any shuffle can draw."""
    prompt = max(len(p.prompt) for p in pairs)
    answer = max(max(len(p.chosen), len(p.rejected)) for p in pairs)
    return min(batch_size, len(pairs)), prompt, answer


def _step_bytes(
    dims: tuple[int, int, int, int, int],
    width: int,
    n: int,
    prompt: int,
    answer: int,
    args: TrainingArgs,
    *,
    backward: bool,
) -> int:
    """Activations and logits of one step on `n` pairs; without `backward` (the reference pass) only one
    layer's values live at a time and the logits have no gradient."""
    layers, hidden, intermediate, heads, vocab = dims
    sequences, length = 2 * n, prompt + answer  # chosen and rejected, each counted at the longest length
    per_layer = (
        sequences
        * (
            length * (ACTIVATION_VALUES_PER_TOKEN * hidden + INTERMEDIATE_VALUES_PER_TOKEN * intermediate)
            + 2 * heads * length * length
        )
        * width
    )
    if not backward:
        kept = per_layer
    elif args.grad_checkpoint:  # each layer's input, and one layer recomputed at a time
        kept = layers * sequences * length * hidden * width + per_layer
    else:
        kept = layers * per_layer
    projected = length if args.full_logits else answer
    if not backward and not args.full_logits:  # forward only: chunked_logps frees its chunks one by one
        return kept + sequences * min(projected, VOCAB_CHUNK) * vocab * 4 * (LOGIT_COPIES - 1)
    copies = (COMPILED_LOGIT_COPIES if args.compile else LOGIT_COPIES) if backward else LOGIT_COPIES - 1
    return kept + sequences * projected * vocab * 4 * copies


def estimate(
    model: nn.Module, config: Mapping, pairs: Sequence[EncodedPair], args: TrainingArgs, lora: LoraSettings
) -> MemoryEstimate:
    """The peak bytes of the run: a training step on the largest micro-batch of `pairs`, or the reference
    pass's forward on twice as many pairs, whichever is higher (see the module's notes)."""
    dims = _dims(model, config)
    width = _activation_bytes(model)
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    n, prompt, answer = largest_batch(pairs, args.batch_size)
    train_step = _step_bytes(dims, width, n, prompt, answer, args, backward=True)
    reference = _step_bytes(dims, width, min(2 * args.batch_size, len(pairs)), prompt, answer, args, backward=False)
    total = weights + _adapter_bytes(model, lora, dims[0]) + max(train_step, reference) + SMALL_BUFFERS
    return MemoryEstimate(total, weights, f"{n} pair(s), prompt {prompt:,} + answer {answer:,} tokens")


def check_fits(
    model: nn.Module, config: Mapping, pairs: Sequence[EncodedPair], args: TrainingArgs, lora: LoraSettings
) -> str:
    """The Status line with the estimate, or MlxDpoError (one line) when the largest batch will not fit."""
    found = estimate(model, config, pairs, args, lora)
    limit = device_limit()
    too_big = limit is not None and found.total > limit.bytes
    # Each rank checks its own machine; they compare verdicts first, so no rank waits for one that stopped.
    distributed.group().check_same(**{"memory check": "stop" if too_big else "go"})
    if limit is None:
        return f"memory: about {gb(found.total)} at peak (estimate; no limit known for this device)"
    if too_big:
        raise MlxDpoError(
            f"the largest batch ({found.batch}) needs about {gb(found.total)} (estimate, of which the model "
            f"{gb(found.weights)}), above the limit of {gb(limit.bytes)} ({limit.source}); lower --batch-size "
            "or --max-length, or turn on --grad-checkpoint"
        )
    return (
        f"memory: about {gb(found.total)} at peak for {found.batch} (estimate; limit {gb(limit.bytes)}, {limit.source})"
    )
