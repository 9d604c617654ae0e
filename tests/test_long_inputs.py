"""Specification of long rows: limits bounded by the model's context, cut rows named by line, no crash.

A 200,000-token answer once crashed the reference pass (exit 139): the attention of one such row holds
heads x 200k x 200k scores. Rows are now cut to --max-length right after tokenizing, so nothing after
that ever holds a longer row; a prompt that cannot be cut (--max-prompt-length 0) and does not fit is
refused with its line.
"""

import re

import mlx.core as mx
import pytest
from helpers import user, write_jsonl

from mlx_dpo.api import train
from mlx_dpo.cli import main
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Finished, Status, StepMetrics
from mlx_dpo.settings import RunOptions
from mlx_dpo.training.tokens import TokenLimits, context_length, may_exceed, token_limits

TINY_SEED = 15
# ~1 token per "word " in SmolLM2's tokenizer: 200,000 words is a 200k-token answer; cheap to build.
LONG_TEXT = "word " * 200_000
# Long enough to pass every limit; the rule is the same at any length, and tokenizing costs ~3 s per 200k tokens.
LONGER = "word " * 3000
NORMAL = [
    {"prompt": f"Name colour number {i}.", "chosen": f"Colour {i} is blue.", "rejected": "I won't."} for i in range(3)
]


def long_file(tmp_path, **long_row):
    """Normal rows with one long row on line 3."""
    row = {"prompt": "Summarise.", "chosen": "Short.", "rejected": LONG_TEXT} | long_row
    return write_jsonl(tmp_path / "pairs.jsonl", NORMAL[0], NORMAL[1], row, NORMAL[2])


# --- the limits ------------------------------------------------------------------------------------------


def test_the_defaults_are_trls_and_the_context_length_bounds_them():
    assert (RunOptions.max_length, RunOptions.max_prompt_length) == (1024, 512)
    assert token_limits({"max_position_embeddings": 8192}, 1024, 512) == TokenLimits(1024, 512)
    short = token_limits({"max_position_embeddings": 256}, 1024, 512)
    assert (short.max_length, short.max_prompt_length) == (256, 255)  # a prompt leaves one answer token
    assert (
        "--max-length 1024 is above the model's context length 256 (config.json max_position_embeddings)" in short.note
    )


def test_the_context_length_is_read_from_the_usual_config_keys():
    assert context_length({"n_positions": 1024}) == (1024, "n_positions")
    assert context_length({"text_config": {"max_position_embeddings": 32768}}) == (32768, "max_position_embeddings")
    assert context_length({"hidden_size": 64}) is None
    assert token_limits({}, 4096, 0) == TokenLimits(4096, None)  # no context known: the setting; 0: prompts uncut


def test_a_byte_count_clears_short_rows_without_a_tokenizer():
    limits = TokenLimits(1024, 512)
    short = PreferencePair("a", [user("Hi")], "Hello.", "Go away.")
    long_answer = PreferencePair("b", [user("Hi")], "x" * 2000, "No.")
    long_prompt = PreferencePair("c", [user("x" * 600)], "Yes.", "No.")
    assert not may_exceed(short, limits)
    assert may_exceed(long_answer, limits) and may_exceed(long_prompt, limits)


# --- training on a file with a 200,000-token row ----------------------------------------------------------


def test_a_200k_token_answer_and_a_long_prompt_are_cut_named_by_their_lines_and_the_run_finishes(tiny, tmp_path):
    long_prompt = {"prompt": LONGER + "Now name a colour.", "chosen": "Red.", "rejected": "No."}
    data = write_jsonl(
        tmp_path / "pairs.jsonl",
        NORMAL[0],
        NORMAL[1],
        {"prompt": "Summarise.", "chosen": "Short.", "rejected": LONG_TEXT},
        NORMAL[2],
        long_prompt,
    )
    events = []
    mx.reset_peak_memory()
    held = mx.get_active_memory()  # arrays other tests in this process still hold count in the peak, not in the run
    # Small limits keep the steps cheap (a 1024-token row costs seconds of log-softmax on CPU); the rule is the same.
    result = train(
        data,
        model=str(tiny),
        adapter_path=tmp_path / "adapter",
        iters=2,
        batch_size=2,
        max_length=128,
        max_prompt_length=64,
        compile=False,
        on_event=events.append,
    )

    (cut,) = [e.message for e in events if isinstance(e, Status) and "were cut" in e.message]
    assert cut.startswith(
        "2 row(s) longer than the limits were cut (rows to --max-length 128 tokens, answers "
        "keeping their start, prompts to 64 keeping their end): "
    )
    assert cut.endswith(f"{data}:3, {data}:5")
    assert any(isinstance(e, Finished) for e in events)
    assert (result.adapter_path / "adapters.safetensors").is_file()
    # The memory check saw the cut rows, and its estimate errs high against the measured peak (memory.py).
    (memory,) = [e.message for e in events if isinstance(e, Status) and e.message.startswith("memory: about ")]
    assert "for 2 pair(s), prompt 64 + answer " in memory
    estimate = (
        float(re.search(r"about ([0-9.]+) (GB|MB)", memory).group(1))
        * {"GB": 1e9, "MB": 1e6}[re.search(r"about [0-9.]+ (GB|MB)", memory).group(1)]
    )
    measured = next(e.metrics["peak_memory_gb"] for e in events if isinstance(e, StepMetrics)) * 1e9
    assert estimate >= measured - held


def test_a_long_prompt_that_may_not_be_cut_is_refused_with_its_line_before_anything_is_written(tiny, tmp_path):
    data = long_file(tmp_path, prompt=LONGER, rejected="Long.")
    with pytest.raises(MlxDpoError) as info:
        train(data, model=str(tiny), adapter_path=tmp_path / "adapter", iters=1, batch_size=2, max_prompt_length=0)
    assert f"{data}:3: prompt alone is " in str(info.value)
    assert "not under --max-length 1024; shorten it, or set --max-prompt-length" in str(info.value)
    assert not (tmp_path / "adapter").exists()


# --- data import (in-process: the command's own function, as `mlx-dpo data import` runs it) ----------------


def test_data_import_warns_about_rows_the_model_cannot_take_whole_and_imports_them(tiny, tmp_path, capsys):
    data = long_file(tmp_path, rejected=LONGER)
    assert main(["data", "import", str(data), "--workspace", str(tmp_path / "ws"), "--model", str(tiny)]) == 0
    out, err = capsys.readouterr()
    (warning,) = err.splitlines()
    assert warning.startswith(
        "mlx-dpo: warning: 1 row(s) are longer than the model takes whole in training "
        "(--max-length 1024, --max-prompt-length 512): "
    )
    assert f"{data}:3 (3,0" in warning and "`train` cuts them" in warning
    assert "imported 4 pair(s)" in out


def test_data_import_of_short_rows_loads_no_tokenizer(tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", *NORMAL)
    # A model that does not exist: short rows never need it.
    assert (
        main(["data", "import", str(data), "--workspace", str(tmp_path / "ws"), "--model", str(tmp_path / "no")]) == 0
    )
    assert capsys.readouterr().err == ""
