"""The fast DPO step (shared prompt, completion-only logits, compile) computes what the plain step computes."""

from __future__ import annotations

import itertools
import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from helpers import make_tiny_model_folder, run_cli, write_demo_pairs
from mlx_dpo.adapter import LoraSettings, add_adapter
from mlx_dpo.logprobs import pair_batch, pair_logps_from_arrays
from mlx_dpo.models import load_model
from mlx_dpo.pairs import PreferencePair
from mlx_dpo.tokens import Encoder
from mlx_dpo.trainer import RefLogps, TrainingArgs, batch_inputs, make_step

PATHS = list(itertools.product([True, False], [False, True]))  # (shared_prompt, full_logits)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, default_model_path):
    """A small random llama with LoRA whose B is non-zero, so gradients reach every adapter weight."""
    loaded = load_model(str(make_tiny_model_folder(tmp_path_factory.mktemp("tiny"), default_model_path)))
    mx.random.seed(1)
    add_adapter(loaded.model, LoraSettings(rank=4))
    for _, m in loaded.model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = 0.05 * mx.random.normal(m.lora_b.shape)
    mx.eval(loaded.model.parameters())
    return loaded


def encoded(tokenizer):
    """Pairs whose prompts differ in length (left padding) and completions differ in length (right padding)."""
    pairs = [
        PreferencePair("a", [{"role": "user", "content": "Hi"}], "Hello there, friend.", "Go away."),
        PreferencePair("b", [{"role": "system", "content": "Be brief and exact."},
                             {"role": "user", "content": "What is the boiling point of water at sea level?"}],
                       "100 degrees Celsius.", "Well, that is a great question! It depends on many things."),
        PreferencePair("c", [{"role": "user", "content": "Name a prime number between ten and twenty."}],
                       "13.", "Twelve is prime, I think, or maybe fifteen."),
    ]
    return Encoder(tokenizer).encode_all(pairs)[0]


def logps(model, pairs, shared_prompt, full_logits):
    arrays, _ = pair_batch(pairs, shared_prompt=shared_prompt, model=model)
    values, lengths = pair_logps_from_arrays(model, arrays, full_logits=full_logits)
    return np.array(values), np.array(lengths)


@pytest.fixture(scope="module")
def plain_logps(default_model):
    """The plain path's summed log-probs and lengths on the default model, computed once."""
    return logps(default_model.model, encoded(default_model.tokenizer), shared_prompt=False, full_logits=True)


@pytest.mark.parametrize("shared_prompt, full_logits", [p for p in PATHS if p != (False, True)])  # all but plain
def test_every_path_gives_the_plain_paths_log_probs_within_1e_4_per_token(default_model, plain_logps, shared_prompt, full_logits):
    plain, lengths = plain_logps
    fast, fast_lengths = logps(default_model.model, encoded(default_model.tokenizer), shared_prompt, full_logits)
    np.testing.assert_array_equal(lengths, fast_lengths)
    np.testing.assert_allclose(fast / lengths, plain / lengths, atol=1e-4)


def loss_and_grads(loaded, args: TrainingArgs, pairs):
    ref = RefLogps({p: (-30.0, -40.0) for p in pairs})
    arrays, _ = batch_inputs(args, pairs, ref, loaded.model)
    (loss, metrics), grads = make_step(loaded.model, args)(*arrays)
    mx.eval(loss, grads)
    return loss.item(), dict(tree_flatten(grads))


@pytest.mark.parametrize("shared_prompt, full_logits, compiled",
                         [(s, f, c) for (s, f) in PATHS for c in (True, False)])
def test_every_path_gives_the_plain_paths_loss_and_gradients(tiny, shared_prompt, full_logits, compiled):
    pairs = encoded(tiny.tokenizer)
    plain_loss, plain_grads = loss_and_grads(tiny, TrainingArgs(shared_prompt=False, full_logits=True, compile=False), pairs)
    loss, grads = loss_and_grads(tiny, TrainingArgs(shared_prompt=shared_prompt, full_logits=full_logits,
                                                     compile=compiled), pairs)
    assert loss == pytest.approx(plain_loss, abs=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name, g in plain_grads.items():
        scale = float(mx.abs(g).max().item())
        assert scale > 0, name
        np.testing.assert_allclose(np.array(grads[name]), np.array(g), atol=1e-4 * scale, err_msg=name)


def test_a_shared_prompt_batch_runs_each_prompt_once(tiny):
    pairs = encoded(tiny.tokenizer)
    _, shared_tokens = pair_batch(pairs, shared_prompt=True)
    _, plain_tokens = pair_batch(pairs, shared_prompt=False)
    prompts = sum(len(p.prompt) for p in pairs)
    completions = sum(len(p.chosen) + len(p.rejected) for p in pairs)
    assert shared_tokens == prompts + completions
    assert plain_tokens == 2 * prompts + completions - 2 * len(pairs)  # last token of each sequence is only a target


def test_switching_the_optimisations_off_on_the_cli_trains_to_the_same_loss(tiny, tmp_path):
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 6)
    losses = {}
    for name, flags in {"fast": [], "plain": ["--no-shared-prompt", "--full-logits", "--no-compile"]}.items():
        result = run_cli("train", "--model", str(tiny.path), "--data", str(data), "--adapter-path",
                         str(tmp_path / name), "--iters", "2", "--batch-size", "3", "--seed", "5", *flags)
        assert result.returncode == 0, result.stderr
        losses[name] = [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(losses["fast"], losses["plain"], atol=1e-5)
