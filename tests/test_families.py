"""Every mlx-lm family people bring gets exact log-probs on every path, or the plain path and a line saying so.

Tiny random models of each family (family_models.py, built from mlx-lm's own classes) are scored on
every path — shared prompt on/off x completion-only head on/off x compiled or not, and packed rows — and compared per
token with log-softmax of the model's own forward, run here on each unpadded sequence alone. Each case
also checks the path it asked for is the one that ran, so a silent fallback cannot compare plain with plain.
Then: two training steps lower the loss; the self-check (fast_path.py) meets forwards the fast path cannot
reproduce and falls back, saying so; and `mlx-dpo train` / `eval` run on a tiny gemma2 folder.
"""

from __future__ import annotations

import itertools
import json

import mlx.core as mx
import numpy as np
import pytest
from family_models import FAMILIES, make_family_folder, make_family_model
from helpers import bare_model, run_cli, write_demo_pairs
from mlx_lm.models import gemma3_text, llama

from mlx_dpo import compat, doctor
from mlx_dpo.data.pairs import load_pairs
from mlx_dpo.events import Status, StepMetrics
from mlx_dpo.models.adapter import LoraSettings, add_adapter
from mlx_dpo.models.load import load_model
from mlx_dpo.models.session import SelfChecks
from mlx_dpo.settings import TrainingArgs
from mlx_dpo.training import fast_path, logprobs, shared_prompt
from mlx_dpo.training.batching import BatchLayout, PackedBatch, SharedPromptBatch, layout_for, make_pair_batch
from mlx_dpo.training.ref_cache import RefCache
from mlx_dpo.training.reference import reference_logps
from mlx_dpo.training.tokens import EncodedPair, Encoder
from mlx_dpo.training.trainer import train_loop

# In-memory models take a small vocabulary (the probes are random ids): the 49152-token projection and
# log-softmax would otherwise be most of this file's time. The CLI test uses the real tokenizer's vocabulary.
VOCAB = 1024
PATHS = list(
    itertools.product([True, False], [True, False], [False, True])
)  # (shared_prompt, completion_only, compiled)


def _ids(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    return tuple(int(t) for t in rng.integers(3, VOCAB, n))


def probe_pairs(seed: int = 7) -> list[EncodedPair]:
    """Two pairs, prompts of different lengths (left padding), completions too (right padding); every sequence
    is longer than the 5-token sliding windows and at most 24 tokens."""
    rng = np.random.default_rng(seed)
    return [
        EncodedPair("short", _ids(rng, 4), _ids(rng, 9), _ids(rng, 6)),
        EncodedPair("long", _ids(rng, 12), _ids(rng, 5), _ids(rng, 11)),
    ]


def own_token_logps(model, pairs: list[EncodedPair]) -> list[np.ndarray]:
    """Each completion's per-token log-probs from the model's own forward on the sequence alone (no padding):
    chosen completions first, then rejected ones, as the batches order them."""
    out = []
    for prompt, completion in [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]:
        seq = mx.array([list(prompt) + list(completion)])
        logits = model(seq[:, :-1]).astype(mx.float32)[0]
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        rows = mx.arange(len(prompt) - 1, len(seq[0]) - 1)
        out.append(np.array(logp[rows, mx.array(completion)]))
    return out


@pytest.fixture(scope="module")
def family_models() -> dict:
    """Each family's model (in memory, built once) with the model's own per-token log-probs of the probe pairs, and
    the record of its self-check (as a model session keeps it: one probe per model)."""
    cache = {}

    def get(family: str):
        if family not in cache:
            model = make_family_model(family, vocab_size=VOCAB)
            cache[family] = (model, own_token_logps(model, probe_pairs()), SelfChecks())
        return cache[family]

    return get


@pytest.fixture
def ran(monkeypatch) -> dict:
    """Counts of the shared-prompt forward and of the completion-only projection (traced, when compiled)."""
    counts = {"shared": 0, "completion_only": 0}
    real_forward, real_chunked = shared_prompt.forward, logprobs.chunked_logps

    def forward(model, batch, mask_dims=4):
        counts["shared"] += 1
        return real_forward(model, batch, mask_dims)

    def chunked(head, states, targets):
        counts["completion_only"] += 1
        return real_chunked(head, states, targets)

    monkeypatch.setattr(shared_prompt, "forward", forward)
    monkeypatch.setattr(logprobs, "chunked_logps", chunked)
    return counts


def path_token_logps(model, batch, full_logits: bool, compiled: bool, mask_dims: int) -> mx.array:
    """(2B, C) per-token log-probs of a batch through the path logprobs.py takes for its layout (`mask_dims`: the
    shared-prompt mask layout the self-check found)."""
    cls = type(batch)

    def run(*arrays):
        if isinstance(batch, SharedPromptBatch):
            return logprobs.shared_prompt_token_logps(model, cls.from_arrays(arrays), full_logits, mask_dims)
        if isinstance(batch, PackedBatch):
            return logprobs.packed_token_stats(model, cls.from_arrays(arrays), full_logits, False, mask_dims)[0]
        return logprobs.token_logps(model, cls.from_arrays(arrays), full_logits)

    if compiled:
        run = mx.compile(run)
    return run(*batch.arrays())


@pytest.mark.parametrize(
    "shared, completion_only, compiled",
    PATHS,
    ids=[
        f"{'shared' if s else 'sequences'}-{'head' if c else 'full'}-{'compiled' if k else 'eager'}"
        for s, c, k in PATHS
    ],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_path_gives_the_models_own_log_probs_within_1e_4_per_token(
    family_models, ran, family, shared, completion_only, compiled
):
    model, own, checks = family_models(family)
    # The self-check keeps the asked-for path on every listed family: nothing here falls back.
    use_shared, full_logits = fast_path.resolve(model, checks, shared_prompt=shared, full_logits=not completion_only)
    assert (use_shared, full_logits) == (shared, not completion_only)
    mask_dims = fast_path.mask_dims(model, checks)  # may run the shared-prompt probe: before the count starts
    ran.update(shared=0, completion_only=0)  # the probe (first case of a family) ran both; count this case only
    layout = layout_for(model, use_shared)
    assert layout is (BatchLayout.SHARED_PROMPT if shared else BatchLayout.SEQUENCES)

    pairs = probe_pairs()
    batch = make_pair_batch(pairs, layout)
    values = np.array(path_token_logps(model, batch, full_logits, compiled, mask_dims))

    assert ran == {"shared": int(shared), "completion_only": int(completion_only)}
    mask = np.array(batch.mask)
    for row, expected in enumerate(own):
        assert mask[row].sum() == len(expected)
        np.testing.assert_allclose(
            values[row, : len(expected)], expected, rtol=0, atol=1e-4, err_msg=f"{family} completion {row}"
        )
        assert np.all(values[row, len(expected) :] == 0)  # padding adds nothing


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_rows_give_the_models_own_log_probs_within_1e_4_per_token(family_models, family):
    model, own, checks = family_models(family)
    assert fast_path.packs(model, checks, pack=True), checks.packing
    layout, mask_dims = fast_path.layout(model, checks, TrainingArgs(pack=True))
    assert layout is BatchLayout.PACKED
    batch = make_pair_batch(probe_pairs(), layout)
    assert batch.inputs.shape[0] < len(own)  # some sequences share a row (past the sliding windows)
    for full_logits, compiled in [(False, False), (False, True), (True, False)]:
        values = np.array(path_token_logps(model, batch, full_logits, compiled, mask_dims))
        for row, expected in enumerate(own):
            np.testing.assert_allclose(
                values[row, : len(expected)], expected, rtol=0, atol=1e-4, err_msg=f"{family} completion {row}"
            )
            assert np.all(values[row, len(expected) :] == 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_training_steps_lower_the_loss(family, tmp_path):
    model = make_family_model(family, seed=1, vocab_size=VOCAB)
    pairs = probe_pairs(seed=3)
    cache = RefCache(f"families-{family}", root=tmp_path)
    checks = SelfChecks()  # one probe for the pass and the training, as a model session keeps it
    ref, _ = reference_logps(model, pairs, cache, batch_size=2, checks=checks)
    cache.close()
    mx.random.seed(0)
    add_adapter(model, LoraSettings(rank=4))
    args = TrainingArgs(
        iters=3, batch_size=2, learning_rate=1e-2, warmup_steps=0, compile=False, steps_per_report=1, save_every=100
    )
    events = []
    train_loop(model, args, pairs, ref, tmp_path / "adapter", {}, on_event=events.append, checks=checks)
    losses = [e.metrics["loss"] for e in events if isinstance(e, StepMetrics)]
    assert len(losses) == 3
    assert losses[0] == pytest.approx(np.log(2), abs=1e-4)  # policy = reference before the first step
    assert losses[2] < losses[0] - 1e-3, losses  # the loss measured after two steps


# --- the self-check meets what the fast path does not know --------------------------------------------------------


class ScaledLogits(llama.Model):
    """A family the fast path has never seen: its forward scales the logits after mlx-lm's own."""

    def __call__(self, inputs, cache=None):
        return super().__call__(inputs, cache) * 3.0


class PositionTemperature(llama.Model):
    """A forward whose logits depend on the position, which replaying its head on chosen states cannot see."""

    def __call__(self, inputs, cache=None):
        logits = self.lm_head(self.model(inputs, cache))
        return logits * (1.0 + 0.5 * mx.arange(logits.shape[1])[:, None])


def _subclassed(cls):
    base = make_family_model("llama_untied", vocab_size=VOCAB)
    model = cls(base.args)
    model.update(base.parameters())
    mx.eval(model.parameters())
    model.eval()
    return model


@pytest.mark.parametrize("cls, why", [(ScaledLogits, "fails on this model"), (PositionTemperature, "differs")])
def test_a_forward_the_fast_path_cannot_reproduce_falls_back_to_the_plain_path_and_says_so(cls, why, ran, tmp_path):
    model = _subclassed(cls)
    pairs = probe_pairs()
    checks = SelfChecks()  # the record a model session keeps: one probe, shared by the pass and the training
    fast_path.fast_paths(model, checks)  # the probe, run here so the counts below see only what the pass itself runs
    ran.update(shared=0, completion_only=0)
    events = []
    cache = RefCache("families-unknown", root=tmp_path)
    ref, _ = reference_logps(model, pairs, cache, batch_size=2, on_event=events.append, checks=checks)
    cache.close()
    lines = [e.message for e in events if isinstance(e, Status) and e.message.startswith("log-probs")]
    assert len(lines) == 1
    assert "prompt not shared, full logits (switched to the plain path: the completion-only head" in lines[0]
    assert why in lines[0]
    assert ran == {"shared": 0, "completion_only": 0}  # after the probe, only the plain path ran

    own = own_token_logps(model, pairs)
    for i, p in enumerate(pairs):
        assert ref.values[p][0] == pytest.approx(float(own[i].sum()), abs=1e-4)
        assert ref.values[p][1] == pytest.approx(float(own[len(pairs) + i].sum()), abs=1e-4)

    # Training on it takes the same decision, once, without a second line.
    add_adapter(model, LoraSettings(rank=4))
    args = TrainingArgs(iters=1, batch_size=2, compile=False, save_every=100)
    train_loop(model, args, pairs, ref, tmp_path / "adapter", {}, on_event=events.append, checks=checks)
    assert [e.message for e in events if isinstance(e, Status) and e.message.startswith("log-probs")] == lines
    assert ran == {"shared": 0, "completion_only": 0}


def test_a_shared_prompt_mask_that_ignores_the_sliding_window_is_caught(monkeypatch):
    # Reintroduce the old bug (the whole prompt visible to sliding-window layers): the self-check must turn the
    # shared prompt off and keep the completion-only head, which is still right.
    real = compat.attention_mask
    monkeypatch.setattr(compat, "attention_mask", lambda valid, offset, n, window_size=None: real(valid, offset, n))
    model = make_family_model("gemma3_text", vocab_size=VOCAB)
    assert isinstance(model, gemma3_text.Model)
    line, (use_shared, full_logits) = fast_path.describe(model)
    assert (use_shared, full_logits) == (False, False)
    assert "prompt not shared, completion-only head (fast path turned off: the shared-prompt forward differs" in line


def test_a_head_that_drops_the_soft_cap_is_caught(monkeypatch):
    # The old head (lm_head or tied embedding, nothing after it) on gemma2: the self-check must notice.
    monkeypatch.setattr(logprobs, "output_head", lambda model: model.model.embed_tokens.as_linear)
    model = make_family_model("gemma2", vocab_size=VOCAB)
    line, use = fast_path.describe(model)
    assert use == (False, True)
    assert "the completion-only head differs from the model's own forward" in line


# --- the command line on gemma2 ----------------------------------------------------------------------------------


def test_mlx_dpo_train_on_gemma2_says_its_path_and_eval_gives_the_models_own_log_probs(tmp_path, default_model_path):
    folder = make_family_folder("gemma2", tmp_path / "tiny-gemma2", default_model_path)
    data = write_demo_pairs(tmp_path / "pairs.jsonl", 4)
    adapter = tmp_path / "adapter"
    result = run_cli(
        "train",
        "--model",
        str(folder),
        "--data",
        str(data),
        "--adapter-path",
        str(adapter),
        "--iters",
        "2",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-2",
        "--no-compile",
    )  # compiled gemma2 paths are checked above; compiling the 49k vocabulary costs ~10 s
    assert result.returncode == 0, result.stderr
    assert "log-probs: shared prompt, completion-only head (max error" in result.stderr

    out = tmp_path / "per_pair.jsonl"
    result = run_cli(
        "eval", "--data", str(data), "--model", str(folder), "--adapter-path", str(adapter), "--per-example", str(out)
    )
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}

    # The model's own forward, base + trained adapter loaded by mlx-lm, on the pairs as the CLI tokenizes them.
    tokenizer = load_model(str(folder)).tokenizer
    encoded, _ = Encoder(tokenizer).encode_all(load_pairs(data).pairs)
    for model, key in [(bare_model(str(folder)), "ref"), (bare_model(str(folder), adapter=adapter), "policy")]:
        own = own_token_logps(model, encoded)
        for i, p in enumerate(encoded):
            assert rows[p.id][f"{key}_chosen_logp"] == pytest.approx(float(own[i].sum()), abs=1e-3)
            assert rows[p.id][f"{key}_rejected_logp"] == pytest.approx(float(own[len(encoded) + i].sum()), abs=1e-3)
    assert any(r["policy_chosen_logp"] != r["ref_chosen_logp"] for r in rows.values())  # the adapter trained


def test_doctor_reports_the_path_a_model_gets(tmp_path, default_model_path):
    path = doctor.report(measure=False, model=str(make_family_folder("cohere", tmp_path / "c", default_model_path)))
    assert path["log_prob_path"]["shared_prompt"] and path["log_prob_path"]["completion_only_head"]
    assert path["log_prob_path"]["summary"].startswith("log-probs: shared prompt, completion-only head (max error")
    assert "log-probs: shared prompt, completion-only head" in doctor.format_report(path)
