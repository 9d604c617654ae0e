"""Shared fixtures. Tests never touch the network: the Hub is forced offline before anything imports it."""

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
# Converted models and the reference cache go to one throwaway home per test process, so a fresh clone
# tests the first-run path (conversion included) every time. Each pytest-xdist worker gets its own, so
# workers never convert the default model into one folder at once.
# The home holds about 1 GB of converted models: it goes when the process ends, or every run fills the disk.
if os.environ.get("PYTEST_XDIST_WORKER") or "MLX_DPO_HOME" not in os.environ:
    os.environ["MLX_DPO_HOME"] = tempfile.mkdtemp(prefix="mlx-dpo-test-home-")
    atexit.register(shutil.rmtree, os.environ["MLX_DPO_HOME"], ignore_errors=True)
# trackio (--report-to trackio) keeps its store beside them, and never logs to a Space or a server from a test.
os.environ["TRACKIO_DIR"] = os.path.join(os.environ["MLX_DPO_HOME"], "trackio")
for _name in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_BUCKET_ID", "TRACKIO_DATASET_ID"):
    os.environ.pop(_name, None)

import mlx_dpo.blas  # noqa: E402,F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import pytest  # noqa: E402
from helpers import make_tiny_model_folder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model, loaded once (dequantized to fp32 on CPU)."""
    from mlx_dpo.models.load import load_model

    return load_model()


@pytest.fixture(scope="session")
def default_model_path():
    from mlx_dpo.models.load import resolve_model_path

    return resolve_model_path(None)


@pytest.fixture(scope="session")
def default_tokenizer(default_model_path):
    """The default model's tokenizer (the one `default_model` has), without loading its weights."""
    from mlx_dpo.models.load import load_tokenizer_only

    return load_tokenizer_only(None)[0]


@pytest.fixture(scope="module")
def tiny(request, tmp_path_factory, default_model_path) -> Path:
    """A small random llama (2 layers, hidden size 64) with the default model's tokenizer: one folder per test
    module, named tiny-llama (the app shows that name, so the snapshots depend on it).

    A module sets `TINY_SEED = N` for weights of its own. The reference cache lives for the whole session and
    is keyed by the weights, so a module that counts cache hits and misses must not share its model.
    """
    seed = getattr(request.module, "TINY_SEED", 0)
    return make_tiny_model_folder(tmp_path_factory.mktemp("models") / "tiny-llama", default_model_path, seed=seed)


@pytest.fixture(scope="module")
def tiny_loaded(tiny):
    """The module's tiny model, loaded once for the module (`mlx_dpo.models.load.load_model`)."""
    from mlx_dpo.models.load import load_model

    return load_model(str(tiny))


@pytest.fixture
def tiny_weights(tiny):
    """A fresh copy of the module's tiny model per test, weights only, no tokenizer (a test may change it)."""
    from mlx_lm.utils import load_model as load_weights_only

    return load_weights_only(tiny)[0]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A 2-layer qwen2 model with a 512-token vocabulary and a ChatML template (tests/chat_tokenizers.py): the
    cheapest real model to start, for tests that run many `mlx-dpo` processes (most of a start is the vocabulary)."""
    from chat_tokenizers import VOCAB_SIZE, make_chat_tokenizer
    from family_models import make_family_folder

    root = tmp_path_factory.mktemp("small")
    tokenizer = make_chat_tokenizer("qwen2", root / "tokenizer")
    eos = json.loads((tokenizer / "config.json").read_text())["eos_token_id"]
    return make_family_folder(
        "qwen2", root / "small-qwen2", tokenizer, seed=24, vocab_size=VOCAB_SIZE, eos_token_id=eos
    )


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """A reference cache nobody has filled yet (MLX_DPO_HOME is read when a cache opens)."""
    home = tmp_path / "mlx-dpo-home"
    monkeypatch.setenv("MLX_DPO_HOME", str(home))
    return home


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A workspace folder that does not exist yet (the store creates it)."""
    return tmp_path / "workspace"


@pytest.fixture
def anyio_backend():
    """The async tests (`pytest.mark.anyio`, the app under Pilot) run on asyncio: Textual's loop."""
    return "asyncio"


# The longest files start first: `make test` hands whole files to the workers (pytest-xdist's loadfile), and a
# long file handed out last would leave one worker running alone at the end. Rough serial seconds, 2026-12-02.
LONGEST_FILES_FIRST = (
    "test_gemma3.py",
    "test_cli_matrix.py",
    "test_training.py",
    "test_tui_train.py",
    "test_train_options.py",
    "test_tui.py",
    "test_online.py",
    "test_online_kill.py",
    "test_tui_online.py",
    "test_models.py",
    "test_export.py",
    "test_train_cli.py",
    "test_families.py",
    "test_distributed.py",
    "test_methods.py",
    "test_rounds.py",
    "test_family_exports.py",
    "test_soak.py",
    "test_step_paths.py",
    "test_tui_snapshots.py",
    "test_gguf.py",
    "test_tui_export.py",
)


# --- the two tiers: `make test` runs every test, `make test-fast` those not marked slow -------------------------
#
# A test is slow (pytest.mark.slow) when it
#   (a) runs the default model: every test using the `default_model` fixture, marked here automatically;
#   (b) starts more than one child process: `mlx-dpo` runs through the CLI, mlx.launch ranks, the app's training
#       child next to its model thread; or
#   (c) trains, samples or exports for more than a few seconds on a 2-core machine: whole runs and rounds, the app
#       sampling from a model, every-loss sweeps, fusing and running llama.cpp.
# (b) and (c) are listed below by file: "*" for every test of the file, else test function names (every
# parametrized case of one). What is left runs in-process on the tiny model or none, each test starting at most
# one child process. Measured with `--durations=0`; tests/test_layout.py checks the names below exist.
SLOW_TESTS: dict[str, str | frozenset[str]] = {
    "test_training.py": "*",
    "test_train_cli.py": "*",
    "test_train_options.py": "*",
    "test_rounds.py": "*",
    "test_heldout.py": "*",
    "test_export.py": "*",
    "test_tui.py": "*",
    "test_tui_train.py": "*",
    "test_tui_kto.py": "*",
    "test_tui_export.py": "*",
    "test_tui_snapshots.py": "*",
    "test_cli_matrix.py": "*",
    "test_online_kill.py": "*",
    "test_soak.py": "*",
    "test_gemma3.py": "*",
    "test_tui_ratings.py": "*",
    "test_acceptance.py": frozenset(
        {"test_a_round_past_its_kl_budget_is_rejected_and_the_next_round_samples_from_the_last_accepted_version"}
    ),
    "test_data_cli.py": frozenset(
        {
            "test_a_bad_file_exits_2_naming_file_line_and_field_and_changes_nothing",
            "test_import_stats_and_export_end_to_end",
            "test_importing_the_same_file_twice_adds_nothing_the_second_time",
            "test_stats_or_export_of_a_missing_store_is_one_clean_error_and_creates_nothing",
        }
    ),
    "test_distributed.py": frozenset(
        {
            "test_two_ranks_train_what_one_rank_trains_and_a_run_resumes_on_another_number_of_ranks",
            "test_a_killed_rank_stops_the_other_with_one_line_naming_it",
        }
    ),
    "test_families.py": frozenset(
        {
            "test_mlx_dpo_train_on_gemma2_says_its_path_and_eval_gives_the_models_own_log_probs",
            "test_doctor_reports_the_path_a_model_gets",
        }
    ),
    "test_grpo_rounds.py": frozenset(
        {"test_grpo_rounds_with_a_program_reward_raise_the_held_out_score_of_a_tiny_model_above_the_bases"}
    ),
    "test_hub_data.py": frozenset({"test_train_by_hub_name_on_an_implicit_prompt_parquet_dataset_and_a_bad_row_named"}),
    "test_logprobs.py": frozenset({"test_chunked_and_full_logits_give_equal_lora_gradients"}),
    "test_long_inputs.py": frozenset(
        {"test_a_200k_token_answer_and_a_long_prompt_are_cut_named_by_their_lines_and_the_run_finishes"}
    ),
    "test_methods.py": frozenset(
        {
            "test_kto_trains_from_answers_marked_good_or_bad_with_cached_reference",
            "test_orpo_runs_without_a_reference_pass_or_cache",
        }
    ),
    "test_models.py": frozenset(
        {
            "test_cli_generate_streams_an_answer_on_the_default_model",
            "test_an_adapter_for_another_base_is_one_line_naming_the_tensor",
            "test_switching_adapters_in_place_gives_each_version_exactly",
        }
    ),
    "test_option_checks.py": frozenset({"test_the_mlx_dpo_script_gives_the_same_line_and_status_to_the_shell"}),
    "test_online.py": frozenset(
        {
            "test_a_program_judges_rounds_raise_the_held_out_score_of_a_tiny_model_above_the_bases",
            "test_a_run_killed_between_judging_and_training_keeps_every_judged_pair_and_goes_on_with_the_next_round",
        }
    ),
    "test_review.py": frozenset(
        {
            "test_the_swapped_pair_comes_first_in_the_review_of_a_trained_round",
            "test_data_review_prints_the_worst_pairs_as_json",
        }
    ),  # one trained round, shared
    "test_store_locking.py": frozenset(
        {
            "test_two_processes_writing_at_once_lose_no_write",
            "test_an_import_into_a_new_store_another_process_is_creating_waits_for_it_and_saves_everything",
            "test_processes_opening_the_same_new_or_old_stores_at_once_all_succeed",
        }
    ),
    "test_step_paths.py": frozenset(
        {
            "test_every_path_gives_the_plain_paths_loss_and_gradients",
            "test_switching_the_optimisations_off_on_the_cli_trains_to_the_same_loss",
        }
    ),
    "test_tracking.py": frozenset({"test_a_train_run_logs_every_metrics_line_to_trackio_under_trls_names"}),
}


def is_slow(item) -> bool:
    listed = SLOW_TESTS.get(item.path.name, frozenset())
    return "default_model" in item.fixturenames or listed == "*" or item.originalname in listed


def pytest_collection_modifyitems(items):
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
