"""`mlx-dpo data import|export|stats`, run in child processes as a user runs them."""

from __future__ import annotations

import json

from helpers import assert_clean_error, run_cli, write_demo_pairs

from mlx_dpo.data.pairs import load_pairs
from mlx_dpo.data.schema import SCHEMA_VERSION
from mlx_dpo.data.store import PreferenceStore


def _stats(workspace) -> dict:
    result = run_cli("data", "stats", "--workspace", str(workspace), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_import_stats_and_export_end_to_end(tmp_path):
    source = write_demo_pairs(tmp_path / "demo.jsonl", 6)
    valid = write_demo_pairs(tmp_path / "valid.jsonl", 2, start=30)
    workspace = tmp_path / "ws"

    result = run_cli("data", "import", str(source), "--workspace", str(workspace))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"imported 6 pair(s) into {workspace / 'preferences.sqlite'} (0 already there)\n"
    assert run_cli("data", "import", str(valid), "--workspace", str(workspace), "--split", "valid").returncode == 0

    stats = _stats(workspace)
    assert (stats["pairs"], stats["by_split"], stats["by_origin"]["imported"]) == (8, {"train": 6, "valid": 2}, 8)
    assert stats["schema_version"] == SCHEMA_VERSION

    out = tmp_path / "train.jsonl"
    result = run_cli("data", "export", str(out), "--workspace", str(workspace), "--split", "train")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"exported 6 pair(s) to {out}\n"
    assert load_pairs(out).pairs == load_pairs(source).pairs


def test_importing_the_same_file_twice_adds_nothing_the_second_time(tmp_path):
    source = write_demo_pairs(tmp_path / "demo.jsonl", 4)
    workspace = tmp_path / "ws"
    run_cli("data", "import", str(source), "--workspace", str(workspace))
    result = run_cli("data", "import", str(source), "--workspace", str(workspace))
    assert result.returncode == 0, result.stderr
    assert "imported 0 pair(s)" in result.stdout and "(4 already there)" in result.stdout
    assert _stats(workspace)["pairs"] == 4


def test_export_in_standard_style(tmp_path):
    workspace = tmp_path / "ws"
    with PreferenceStore(workspace) as store:
        store.add_pair("What is 2 + 2?", "4.", "Five.")
    out = tmp_path / "out.jsonl"
    result = run_cli("data", "export", str(out), "--workspace", str(workspace), "--style", "standard")
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == {
        "id": "store-1",
        "prompt": "What is 2 + 2?",
        "chosen": "4.",
        "rejected": "Five.",
    }


def test_stats_reads_as_a_short_summary(tmp_path):
    workspace = tmp_path / "ws"
    with PreferenceStore(workspace) as store:
        store.add_pair("Q1?", "A.", "B.", origin="sampled")
        store.add_pair("Q2?", "A.", "B.", split="valid")
        store.add_skip("Q3?")
    result = run_cli("data", "stats", "--workspace", str(workspace))
    assert result.returncode == 0, result.stderr
    assert "pairs:      2 (train 1, valid 1)" in result.stdout
    assert "origins:    typed 1, sampled 1, imported 0, compared 0" in result.stdout
    assert "skips:      1" in result.stdout


def test_a_bad_file_exits_2_naming_file_line_and_field_and_changes_nothing(tmp_path):
    good = write_demo_pairs(tmp_path / "good.jsonl", 2)
    rows = good.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([rows[0], '{"prompt": "Q?", "chosen": "A."}', rows[1]]) + "\n")
    workspace = tmp_path / "ws"

    result = run_cli("data", "import", str(bad), "--workspace", str(workspace))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    # One error message (its lines list the bad rows), and it points at the row and the field.
    assert result.stderr.startswith("mlx-dpo: error:") and result.stderr.count("error:") == 1, result.stderr
    assert f"{bad}:2: field 'rejected': is missing" in result.stderr
    assert "--skip-invalid" in result.stderr
    assert not workspace.exists()  # not even an empty store

    run_cli("data", "import", str(good), "--workspace", str(workspace))
    assert run_cli("data", "import", str(bad), "--workspace", str(workspace)).returncode == 2
    assert _stats(workspace)["pairs"] == 2


def test_skip_invalid_imports_the_good_rows_and_lists_the_bad_ones(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q?", "chosen": "A.", "rejected": "B."}\nnot json\n')
    workspace = tmp_path / "ws"
    result = run_cli("data", "import", str(bad), "--workspace", str(workspace), "--skip-invalid")
    assert result.returncode == 0, result.stderr
    assert "imported 1 pair(s)" in result.stdout
    assert f"{bad}: skipped 1 invalid row(s)" in result.stderr
    assert f"{bad}:2: not valid JSON" in result.stderr


def test_a_missing_file_is_one_clean_error(tmp_path):
    result = run_cli("data", "import", str(tmp_path / "nope.jsonl"), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 2
    assert_clean_error(result, "nope.jsonl: no such file")
    assert not (tmp_path / "ws").exists()


def test_stats_or_export_of_a_missing_store_is_one_clean_error_and_creates_nothing(tmp_path):
    workspace = tmp_path / "typo"
    for args in (["stats"], ["export", str(tmp_path / "out.jsonl")]):
        result = run_cli("data", *args, "--workspace", str(workspace))
        assert result.returncode == 2
        assert_clean_error(result, "no preference store here")
    assert not workspace.exists() and not (tmp_path / "out.jsonl").exists()


def test_an_export_that_does_not_fit_the_style_writes_nothing(tmp_path):
    workspace = tmp_path / "ws"
    with PreferenceStore(workspace) as store:
        store.add_pair([{"role": "system", "content": "S."}, {"role": "user", "content": "Q?"}], "A.", "B.")
    out = tmp_path / "out.jsonl"
    result = run_cli("data", "export", str(out), "--workspace", str(workspace), "--style", "standard")
    assert result.returncode == 2
    assert_clean_error(result, "use the conversational style")
    assert not out.exists()


def test_a_damaged_store_is_one_clean_error(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "preferences.sqlite").write_text("not a database\n" * 100)
    result = run_cli("data", "stats", "--workspace", str(workspace))
    assert result.returncode == 2
    assert_clean_error(result, "preferences.sqlite: not a usable preference database")
