"""Specification of the memory check: the largest batch's peak is estimated before the first forward pass,
and a run that would not fit stops with one line naming the batch, the estimate and the limit.

The real limit (MemAvailable here) is read in every test; MLX_DPO_MEMORY_LIMIT sets a small one to see the
refusal. That the estimate errs high against the measured peak is checked on the long-row run in
test_long_inputs.py (it runs a real step anyway).
"""

import pytest
from helpers import write_jsonl

from mlx_dpo.api import train
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.settings import LoraSettings, TrainingArgs
from mlx_dpo.training.memory import LIMIT_ENV, check_fits, device_limit, estimate, parse_size
from mlx_dpo.training.tokens import EncodedPair

TINY_SEED = 16


def pairs(count: int, prompt: int, answer: int) -> list[EncodedPair]:
    return [EncodedPair(str(i), (1,) * prompt, (2,) * answer, (3,) * answer) for i in range(count)]


def test_sizes_read_with_or_without_a_unit():
    assert parse_size("8GB") == 8 * 10**9
    assert parse_size("512 MiB") == 512 * 2**20
    assert parse_size("1000") == 1000
    for bad in ("lots", "-1GB", "8 parsecs", "0"):
        with pytest.raises(MlxDpoError, match=f"^{LIMIT_ENV}="):
            parse_size(bad)


def test_the_limit_is_the_devices_unless_the_environment_sets_one(monkeypatch):
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    real = device_limit()
    assert real is not None and real.bytes > 10**8  # this machine's available memory, plus what MLX holds
    assert "MemAvailable" in real.source or "memory" in real.source
    assert device_limit({LIMIT_ENV: "3GB"}).bytes == 3 * 10**9


def test_the_estimate_grows_with_the_batch_and_the_length_and_shrinks_with_grad_checkpoint(tiny_loaded):
    args, lora = TrainingArgs(batch_size=4), LoraSettings()
    base = estimate(tiny_loaded.model, tiny_loaded.config, pairs(8, 64, 64), args, lora)
    assert base.weights > 0 and base.total > base.weights
    assert base.batch == "4 pair(s), prompt 64 + answer 64 tokens"  # the batch size, not all 8 pairs
    longer = estimate(tiny_loaded.model, tiny_loaded.config, pairs(8, 64, 512), args, lora)
    wider = estimate(tiny_loaded.model, tiny_loaded.config, pairs(8, 64, 64), TrainingArgs(batch_size=8), lora)
    assert longer.total > base.total and wider.total > base.total
    # One pair: the training step, not the reference pass's forward on twice the pairs, sets the peak.
    kept = estimate(tiny_loaded.model, tiny_loaded.config, pairs(1, 64, 512), args, lora)
    saved = estimate(
        tiny_loaded.model, tiny_loaded.config, pairs(1, 64, 512), TrainingArgs(batch_size=4, grad_checkpoint=True), lora
    )
    assert saved.total < kept.total


def test_a_batch_that_fits_is_reported_with_its_estimate_and_the_limit(tiny_loaded, monkeypatch):
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    line = check_fits(
        tiny_loaded.model, tiny_loaded.config, pairs(4, 32, 32), TrainingArgs(batch_size=2), LoraSettings()
    )
    assert line.startswith("memory: about ") and "B at peak for 2 pair(s), prompt 32 + answer 32 tokens" in line
    assert "(estimate; limit " in line


def test_a_run_that_would_not_fit_stops_before_the_reference_pass_with_one_line(tiny_loaded, tmp_path, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "1MB")
    data = write_jsonl(
        tmp_path / "pairs.jsonl",
        *[{"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(4)],
    )
    with pytest.raises(MlxDpoError) as info:
        train(data, loaded=tiny_loaded, adapter_path=tmp_path / "adapter", iters=1, batch_size=2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the largest batch (2 pair(s), prompt ")
    assert "B (estimate, of which the model " in message and "above the limit of 1 MB (MLX_DPO_MEMORY_LIMIT)" in message
    assert message.endswith("lower --batch-size or --max-length, or turn on --grad-checkpoint")
    assert not (tmp_path / "adapter").exists()  # nothing written, nothing computed
