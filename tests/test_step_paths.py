"""The fast DPO step (shared prompt or packed rows, completion-only logits, compile) computes what the plain step
computes."""

from __future__ import annotations

import itertools
import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from helpers import run_cli, write_demo_pairs
from mlx.utils import tree_flatten

from mlx_dpo import compat
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.events import Status
from mlx_dpo.models.adapter import LoraSettings
from mlx_dpo.models.load import load_model
from mlx_dpo.settings import TrainingArgs
from mlx_dpo.training import fast_path
from mlx_dpo.training import shared_prompt as shared_prompt_forward
from mlx_dpo.training.batching import BatchLayout, layout_for, make_packed_batch, make_pair_batch, padding_share
from mlx_dpo.training.logprobs import completion_logps
from mlx_dpo.training.ref_cache import RefCache
from mlx_dpo.training.reference import RefLogps, reference_logps
from mlx_dpo.training.tokens import Encoder
from mlx_dpo.training.trainer import evaluate_pairs, make_step

PATHS = list(itertools.product([True, False], [False, True]))  # (shared_prompt, full_logits)


@pytest.fixture(scope="module")
def tiny(tiny):
    """The module's tiny model (conftest.py's folder), loaded, with LoRA whose B is non-zero, so gradients
    reach every adapter weight."""
    loaded = load_model(str(tiny))
    mx.random.seed(1)
    loaded.train_adapter(None, LoraSettings(rank=4))
    for _, m in loaded.model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = 0.05 * mx.random.normal(m.lora_b.shape)
    mx.eval(loaded.model.parameters())
    fast_path.fast_paths(loaded.model, loaded.checks)  # the self-check's probe runs here, not in the runs counted below
    return loaded


def encoded(tokenizer):
    """Pairs whose prompts differ in length (left padding) and completions differ in length (right padding)."""
    pairs = [
        PreferencePair("a", [{"role": "user", "content": "Hi"}], "Hello there, friend.", "Go away."),
        PreferencePair(
            "b",
            [
                {"role": "system", "content": "Be brief and exact."},
                {"role": "user", "content": "What is the boiling point of water at sea level?"},
            ],
            "100 degrees Celsius.",
            "Well, that is a great question! It depends on many things.",
        ),
        PreferencePair(
            "c",
            [{"role": "user", "content": "Name a prime number between ten and twenty."}],
            "13.",
            "Twelve is prime, I think, or maybe fifteen.",
        ),
    ]
    return Encoder(tokenizer).encode_all(pairs)[0]


def varied(tokenizer):
    """`encoded`'s pairs and one whose chosen answer is long: the rows packed from them hold several sequences."""
    long = PreferencePair(
        "d",
        [{"role": "user", "content": "Describe a lighthouse."}],
        " ".join(["A tall white tower stands on the rocks, its lamp turning slowly through the night."] * 6),
        "No.",
    )
    return encoded(tokenizer) + Encoder(tokenizer).encode_all([long])[0]


def logps(model, pairs, shared_prompt, full_logits):
    batch = make_pair_batch(pairs, layout_for(model, shared_prompt))
    values, lengths = completion_logps(model, batch, full_logits=full_logits), batch.lengths
    return np.array(values), np.array(lengths)


@pytest.fixture(scope="module")
def plain_logps(default_model):
    """The plain path's summed log-probs and lengths on the default model, computed once."""
    return logps(default_model.model, encoded(default_model.tokenizer), shared_prompt=False, full_logits=True)


@pytest.mark.parametrize("shared_prompt, full_logits", [p for p in PATHS if p != (False, True)])  # all but plain
def test_every_path_gives_the_plain_paths_log_probs_within_1e_4_per_token(
    default_model, plain_logps, shared_prompt, full_logits
):
    plain, lengths = plain_logps
    fast, fast_lengths = logps(default_model.model, encoded(default_model.tokenizer), shared_prompt, full_logits)
    np.testing.assert_array_equal(lengths, fast_lengths)
    np.testing.assert_allclose(fast / lengths, plain / lengths, atol=1e-4)


def direct_logps(model, pair) -> list[float]:
    """A pair's summed completion log-probs (chosen, rejected) the plain way, written out here: one unbatched
    forward of prompt + completion, log-softmax, the log-prob of each completion token given all before it."""
    values = []
    for completion in (pair.chosen, pair.rejected):
        sequence = list(pair.prompt) + list(completion)
        logits = model(mx.array([sequence[:-1]]))[0].astype(mx.float32)
        log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        start = len(pair.prompt) - 1  # the position whose output predicts the first completion token
        rows = log_probs[start : start + len(completion)]
        values.append(mx.take_along_axis(rows, mx.array(completion)[:, None], axis=-1).sum().item())
    return values


@pytest.fixture(scope="module")
def direct(default_model) -> np.ndarray:
    """Each completion's log-prob by `direct_logps`: the chosen of every pair, then the rejected."""
    values = [direct_logps(default_model.model, p) for p in encoded(default_model.tokenizer)]
    return np.array([c for c, _ in values] + [r for _, r in values])


@pytest.mark.parametrize("full_logits", [False, True])
def test_the_shared_prompt_layout_gives_each_completions_log_prob_under_its_own_prompt(
    default_model, direct, full_logits
):
    # Independent of the plain path: if both were wrong alike, the comparisons above would still pass.
    model, pairs = default_model.model, encoded(default_model.tokenizer)
    batch = make_pair_batch(pairs, layout_for(model, shared_prompt=True))
    assert type(batch) is BatchLayout.SHARED_PROMPT.value
    shared, lengths = completion_logps(model, batch, full_logits=full_logits), np.array(batch.lengths)
    np.testing.assert_array_equal(lengths, [len(p.chosen) for p in pairs] + [len(p.rejected) for p in pairs])
    np.testing.assert_allclose(np.array(shared) / lengths, direct / lengths, atol=1e-4)


@pytest.mark.parametrize("full_logits", [False, True])
def test_packed_rows_give_each_completions_log_prob_under_its_own_prompt(default_model, direct, full_logits):
    model, pairs = default_model.model, encoded(default_model.tokenizer)
    assert fast_path.packs(model, default_model.checks, pack=True)
    # All six sequences in one row, each behind the others: the last sits where only a long row reaches.
    sequences = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    batch = make_packed_batch(sequences, row_length=sum(len(p) + len(c) for p, c in sequences))
    assert batch.inputs.shape[0] == 1
    packed, lengths = completion_logps(model, batch, full_logits=full_logits), np.array(batch.lengths)
    np.testing.assert_array_equal(lengths, [len(p.chosen) for p in pairs] + [len(p.rejected) for p in pairs])
    np.testing.assert_allclose(np.array(packed) / lengths, direct / lengths, atol=1e-4)


def test_a_packed_batch_holds_every_sequence_once_in_rows_no_longer_than_the_plain_batchs(tiny):
    pairs = varied(tiny.tokenizer)
    plain, packed = make_pair_batch(pairs, BatchLayout.SEQUENCES), make_pair_batch(pairs, BatchLayout.PACKED)
    T = plain.inputs.shape[1]
    assert packed.inputs.shape[1] == T
    assert packed.num_tokens == plain.num_tokens
    assert packed.inputs.shape[0] < 2 * len(pairs)  # short sequences share a row
    assert padding_share(packed) < padding_share(plain)
    inputs, segments = np.array(packed.inputs), np.array(packed.segments)
    sequences = [list(p.prompt) + list(p.chosen) for p in pairs] + [list(p.prompt) + list(p.rejected) for p in pairs]
    for i, seq in enumerate(sequences):
        rows, columns = np.nonzero(segments == i)
        assert len(set(rows)) == 1  # a sequence is never split across rows
        assert list(columns) == list(range(columns[0], columns[0] + len(seq) - 1))  # in one run, in order
        assert list(inputs[rows[0], columns]) == seq[:-1]
        # Each completion token is predicted from the position just before it, in its own sequence.
        flat = np.array(packed.positions)[i, : int(np.array(packed.lengths)[i])]
        assert list(flat // T) == [rows[0]] * len(flat)
        assert list(flat % T) == list(columns[len(seq) - 1 - len(flat) :])
    assert (segments == -1).sum() == packed.inputs.size - packed.num_tokens


def loss_and_grads(loaded, args: TrainingArgs, pairs):
    ref = RefLogps({p: (-30.0, -40.0) for p in pairs})
    step = make_step(loaded.model, args, checks=loaded.checks)
    (loss, metrics), grads = step(step.batch(pairs, ref))
    mx.eval(loss, grads)
    return loss.item(), dict(tree_flatten(grads))


@pytest.mark.parametrize(
    "shared_prompt, full_logits, compiled",
    [(s, f, c) for (s, f) in PATHS for c in (True, False) if (s, f, c) != (False, True, False)],
)
def test_every_path_gives_the_plain_paths_loss_and_gradients(tiny, shared_prompt, full_logits, compiled):
    pairs = encoded(tiny.tokenizer)
    plain_loss, plain_grads = loss_and_grads(
        tiny, TrainingArgs(shared_prompt=False, full_logits=True, compile=False), pairs
    )
    loss, grads = loss_and_grads(
        tiny, TrainingArgs(shared_prompt=shared_prompt, full_logits=full_logits, compile=compiled), pairs
    )
    assert loss == pytest.approx(plain_loss, abs=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name, g in plain_grads.items():
        scale = float(mx.abs(g).max().item())
        assert scale > 0, name
        np.testing.assert_allclose(np.array(grads[name]), np.array(g), atol=1e-4 * scale, err_msg=name)


@pytest.mark.parametrize("full_logits, compiled", [(False, True), (False, False), (True, False)])
def test_packed_rows_give_the_plain_paths_loss_and_gradients(tiny, full_logits, compiled):
    pairs = varied(tiny.tokenizer)
    assert make_pair_batch(pairs, BatchLayout.PACKED).inputs.shape[0] < 2 * len(pairs)
    plain_loss, plain_grads = loss_and_grads(
        tiny, TrainingArgs(shared_prompt=False, full_logits=True, compile=False), pairs
    )
    args = TrainingArgs(pack=True, full_logits=full_logits, compile=compiled)
    assert make_step(tiny.model, args, checks=tiny.checks).layout is (
        BatchLayout.SHARED_PROMPT if full_logits else BatchLayout.PACKED  # --full-logits: no packing, prompt shared
    )
    loss, grads = loss_and_grads(tiny, args, pairs)
    assert loss == pytest.approx(plain_loss, abs=1e-5)
    for name, g in plain_grads.items():
        scale = float(mx.abs(g).max().item())
        np.testing.assert_allclose(np.array(grads[name]), np.array(g), atol=1e-4 * scale, err_msg=name)


def test_packed_rows_that_leak_between_sequences_are_caught_and_the_step_runs_unpacked(tiny, monkeypatch, tmp_path):
    # A mask that forgets the sequences (plain causal over the row): each sequence would see the ones before it.
    monkeypatch.setattr(compat, "segment_mask", _causal_only)
    loaded = load_model(str(tiny.path))  # a fresh record: the probe runs with the leaking mask
    events = []
    step = make_step(loaded.model, TrainingArgs(pack=True), on_event=events.append, checks=loaded.checks)
    assert step.layout is BatchLayout.SHARED_PROMPT
    lines = [e.message for e in events if isinstance(e, Status) and e.message.startswith("log-probs")]
    assert lines[0].startswith("log-probs: rows not packed (the packed forward differs from the model's own forward")
    pairs = encoded(loaded.tokenizer)
    cache = RefCache("leaky-packing", root=tmp_path)
    ref, _ = reference_logps(loaded.model, pairs, cache, pack=True, checks=loaded.checks)
    cache.close()
    expected = [direct_logps(loaded.model, p) for p in pairs]
    for p, (chosen, rejected) in zip(pairs, expected):
        assert ref.values[p] == pytest.approx((chosen, rejected), abs=1e-3)


def _causal_only(segments: mx.array, window_size: int | None = None) -> mx.array:
    return compat.attention_mask(mx.ones(segments.shape, dtype=mx.bool_), 0, segments.shape[1], window_size)


def test_a_shared_prompt_batch_runs_each_prompt_once(tiny):
    pairs = encoded(tiny.tokenizer)
    shared_tokens = make_pair_batch(pairs, BatchLayout.SHARED_PROMPT).num_tokens
    plain_tokens = make_pair_batch(pairs, BatchLayout.SEQUENCES).num_tokens
    prompts = sum(len(p.prompt) for p in pairs)
    completions = sum(len(p.chosen) + len(p.rejected) for p in pairs)
    assert shared_tokens == prompts + completions
    assert plain_tokens == 2 * prompts + completions - 2 * len(pairs)  # last token of each sequence is only a target


def test_switching_the_optimisations_off_on_the_cli_trains_to_the_same_loss(tiny, tmp_path):
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 6)
    losses = {}
    runs = {"fast": [], "packed": ["--pack"], "plain": ["--no-shared-prompt", "--full-logits", "--no-compile"]}
    for name, flags in runs.items():
        result = run_cli(
            "train",
            "--model",
            str(tiny.path),
            "--data",
            str(data),
            "--adapter-path",
            str(tmp_path / name),
            "--iters",
            "2",
            "--batch-size",
            "3",
            "--seed",
            "5",
            *flags,
        )
        assert result.returncode == 0, result.stderr
        losses[name] = [
            json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        ]
    np.testing.assert_allclose(losses["fast"], losses["plain"], atol=1e-5)
    np.testing.assert_allclose(losses["packed"], losses["plain"], atol=1e-5)


# --- which layout each path really runs -------------------------------------------------------------------------


@pytest.fixture
def shared_forward_runs(monkeypatch):
    """Batches the shared-prompt forward was run (or, compiled, traced) on."""
    runs = []
    real = shared_prompt_forward.forward
    monkeypatch.setattr(
        shared_prompt_forward,
        "forward",
        lambda model, batch, mask_dims=4: runs.append(batch) or real(model, batch, mask_dims),
    )
    return runs


@pytest.mark.parametrize("shared_prompt, full_logits, compiled", [(s, f, c) for (s, f) in PATHS for c in (True, False)])
def test_every_step_path_runs_the_layout_it_asks_for(tiny, shared_forward_runs, shared_prompt, full_logits, compiled):
    # The equality tests above would pass just as well if a shared-prompt request silently fell back to two sequences.
    pairs = encoded(tiny.tokenizer)
    expected = BatchLayout.SHARED_PROMPT if shared_prompt else BatchLayout.SEQUENCES
    step = make_step(
        tiny.model,
        TrainingArgs(shared_prompt=shared_prompt, full_logits=full_logits, compile=compiled),
        checks=tiny.checks,
    )
    assert step.layout is expected
    batch = step.batch(pairs, RefLogps({p: (-30.0, -40.0) for p in pairs}))
    assert type(batch.tokens) is expected.value
    mx.eval(step(batch))
    assert len(shared_forward_runs) == (1 if shared_prompt else 0)


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_the_reference_pass_and_evaluation_run_the_steps_layout(tiny, tmp_path, shared_forward_runs, shared_prompt):
    pairs = encoded(tiny.tokenizer)
    cache = RefCache("layout-test", root=tmp_path)
    ref, _ = reference_logps(
        tiny.model, pairs, cache, batch_size=len(pairs), shared_prompt=shared_prompt, checks=tiny.checks
    )
    cache.close()
    assert len(shared_forward_runs) == (1 if shared_prompt else 0)
    evaluate_pairs(
        tiny.model, TrainingArgs(batch_size=len(pairs), shared_prompt=shared_prompt), pairs, ref, tiny.checks
    )
    assert len(shared_forward_runs) == (2 if shared_prompt else 0)


class ForwardOnly(nn.Module):
    """A model without mlx-lm's `model.model` layout: only its forward over whole sequences."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def __call__(self, inputs: mx.array) -> mx.array:
        return self.inner(inputs)


def test_a_model_without_mlx_lms_layout_takes_the_sequence_layout_and_the_plain_loss(tiny, shared_forward_runs):
    pairs = encoded(tiny.tokenizer)
    assert layout_for(tiny.model, shared_prompt=True) is BatchLayout.SHARED_PROMPT
    model = ForwardOnly(tiny.model)
    assert layout_for(model, shared_prompt=True) is BatchLayout.SEQUENCES
    ref = RefLogps({p: (-30.0, -40.0) for p in pairs})
    step = make_step(model, TrainingArgs(shared_prompt=True, full_logits=True))
    assert step.layout is BatchLayout.SEQUENCES
    (loss, _), _ = step(step.batch(pairs, ref))
    plain_loss, _ = loss_and_grads(tiny, TrainingArgs(shared_prompt=False, full_logits=True, compile=False), pairs)
    assert loss.item() == pytest.approx(plain_loss, abs=1e-5)
    assert shared_forward_runs == []


def test_a_step_refuses_a_batch_packed_in_the_other_layout(tiny):
    pairs = encoded(tiny.tokenizer)
    ref = RefLogps({p: (-30.0, -40.0) for p in pairs})
    shared = make_step(tiny.model, TrainingArgs(shared_prompt=True), checks=tiny.checks)
    plain = make_step(tiny.model, TrainingArgs(shared_prompt=False), checks=tiny.checks)
    with pytest.raises(ValueError, match="SEQUENCES batch given to a step built for SHARED_PROMPT"):
        shared(plain.batch(pairs, ref))
