"""Data where TRL users keep it: Hub datasets by name (`owner/name[:split]`, `--data-config`), Parquet files, and
every TRL preference format (explicit or implicit prompt, standard or conversational, unpaired rows for KTO).

No test touches the network: a dataset is a folder laid out as huggingface_hub's cache holds it (helpers.hub_dataset),
which it resolves offline (HF_HUB_OFFLINE is set for the whole suite), with Parquet files written here.
"""

from __future__ import annotations

import pytest
from helpers import assistant, hub_dataset, run_cli, system, user, write_demo_pairs, write_jsonl

from mlx_dpo.data.feedback import load_feedback
from mlx_dpo.data.pairs import UnpairedRows, load_pairs
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError

TINY_SEED = 5


def conversational(i: int, good: str = "Yes.", bad: str = "No idea.") -> dict:
    return {"prompt": [user(f"Question {i}?")], "chosen": [assistant(good)], "rejected": [assistant(bad)]}


def implicit(i: int) -> dict:
    """HH-RLHF's shape: two whole conversations that part in their last assistant turn."""
    shared = [system("Be kind."), user(f"Hi {i}?"), assistant("Hello."), user("How are you?")]
    return {"chosen": shared + [assistant("Well, thanks.")], "rejected": shared + [assistant("Go away.")]}


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An HF_HOME whose hub cache huggingface_hub reads (it takes the cache folder from its constants at each call)."""
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


# --- by name -----------------------------------------------------------------------------------------------


def test_a_hub_dataset_by_name_gives_its_train_split_and_a_named_split_on_request(hf_home):
    hub_dataset(
        hf_home,
        "acme/prefs",
        {
            "data/train-00000-of-00001.parquet": [conversational(i) for i in range(3)],
            "data/test-00000-of-00001.parquet": [conversational(9)],
        },
    )
    train = load_pairs("acme/prefs").pairs
    assert [p.prompt for p in train] == [[user(f"Question {i}?")] for i in range(3)]
    assert train[1].source == "hf://datasets/acme/prefs/data/train-00000-of-00001.parquet row 1"
    assert [p.prompt for p in load_pairs("acme/prefs:test").pairs] == [[user("Question 9?")]]
    # Validation data without ":split" reads the test split (TRL's dataset_test_split).
    assert load_pairs("acme/prefs", default_split="test").pairs == load_pairs("acme/prefs:test").pairs


def test_the_cards_yaml_configs_choose_the_files_of_a_config_and_a_split(hf_home):
    card = """---
configs:
- config_name: small
  default: true
  data_files:
  - split: train_prefs
    path: small/train_prefs-*
- config_name: big
  data_files:
  - split: train_prefs
    path: big/*.jsonl
---
# A dataset
"""
    hub_dataset(
        hf_home,
        "acme/cfg",
        {
            "README.md": card,
            "small/train_prefs-0.parquet": [conversational(1)],
            "big/a.jsonl": [conversational(2), conversational(3)],
        },
    )
    assert len(load_pairs("acme/cfg:train_prefs").pairs) == 1
    assert len(load_pairs("acme/cfg:train_prefs", config="big").pairs) == 2
    with pytest.raises(
        MlxDpoError,
        match=r"acme/cfg: no split 'train' \(splits: train_prefs\); name one as "
        r"acme/cfg:SPLIT",
    ):
        load_pairs("acme/cfg")
    with pytest.raises(MlxDpoError, match=r"no config 'huge' \(configs: small, big\)"):
        load_pairs("acme/cfg:train_prefs", config="huge")


def test_without_a_card_file_names_say_the_split_and_a_config_is_a_folder(hf_home, tmp_path):
    # Anthropic/hh-rlhf's layout: a folder per subset, gzipped JSON Lines of implicit-prompt texts.
    hh = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go."}
    hub_dataset(
        hf_home,
        "acme/named",
        {
            "en/train.jsonl": [conversational(1)],
            "en/valid.jsonl": [conversational(2)],
            "harmless-base/train.jsonl.gz": [hh],
            "harmless-base/test.jsonl.gz": [hh],
        },
    )
    assert [p.prompt for p in load_pairs("acme/named:validation", config="en").pairs] == [[user("Question 2?")]]
    [pair] = load_pairs("acme/named", config="harmless-base").pairs
    assert (pair.prompt, pair.chosen, pair.rejected) == ([user("\n\nHuman: Hi?\n\nAssistant:")], " Hello.", " Go.")
    # A local folder is read by the same rules, without the Hub.
    folder = tmp_path / "local"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "test-0.jsonl", conversational(7))
    write_jsonl(folder / "data" / "train-0.jsonl", conversational(8))
    assert [p.prompt for p in load_pairs(f"{folder}:test").pairs] == [[user("Question 7?")]]


def test_a_dataset_the_cache_lacks_while_offline_is_one_line():
    with pytest.raises(
        MlxDpoError,
        match=r"acme/absent: not \(or not wholly\) in the Hugging Face cache .* and "
        r"HF_HUB_OFFLINE is set",
    ):
        load_pairs("acme/absent")


# --- one rule set, whatever the file ----------------------------------------------------------------------

# Parquet columns are typed: a bad row there is a blank, a null, a wrong role, conversations that do not part right.
BAD = [
    conversational(0),
    {**conversational(1), "chosen": [assistant(" ")]},
    {**conversational(2), "rejected": [user("Hm?")]},
    {
        **conversational(3),
        "prompt": None,
        "chosen": [user("x"), assistant("y")],
        "rejected": [user("z"), assistant("w")],
    },
]


def test_a_malformed_parquet_row_is_named_by_file_and_row_with_the_jsonl_readers_rules(hf_home, tmp_path):
    hub_dataset(hf_home, "acme/bad", {"data/train-00000-of-00001.parquet": BAD})
    with pytest.raises(MlxDpoError) as raised:
        load_pairs("acme/bad")
    where = "hf://datasets/acme/bad/data/train-00000-of-00001.parquet"
    assert str(raised.value).splitlines()[:2] == [
        "acme/bad:train: 3 invalid rows:",
        f"  {where} row 1: field 'chosen[0].content': is empty",
    ]
    parquet = load_pairs("acme/bad", skip_invalid=True)
    jsonl = load_pairs(write_jsonl(tmp_path / "bad.jsonl", *BAD), skip_invalid=True)
    assert [(e.kind, e.line) for e in parquet.errors] == [("row", 1), ("row", 2), ("row", 3)]  # rows count from 0
    assert [(e.kind, e.line) for e in jsonl.errors] == [("line", 2), ("line", 3), ("line", 4)]  # lines from 1
    assert [(e.field, e.message) for e in parquet.errors] == [(e.field, e.message) for e in jsonl.errors]
    assert [(e.field, e.message) for e in parquet.errors][1:] == [
        ("rejected[0].role", "must be 'assistant' here, got 'user'"),
        (
            "rejected[0]",
            "differs from 'chosen[0]': the two conversations share no first turn, so there is no prompt "
            "to take from them; give a 'prompt' field",
        ),
    ]
    assert parquet.pairs == jsonl.pairs and len(parquet.pairs) == 1


# --- the implicit prompt ----------------------------------------------------------------------------------


def test_an_implicit_prompt_is_the_turns_both_conversations_share(tmp_path):
    text_prompt = {"prompt": "Hi 1?", **implicit(1)}  # a text prompt beside whole conversations: TRL extracts too
    hh = {
        "chosen": "\n\nHuman: Sky?\n\nAssistant: It is blue.",
        "rejected": "\n\nHuman: Sky?\n\nAssistant: It was red.",
    }
    pairs = load_pairs(write_jsonl(tmp_path / "implicit.jsonl", implicit(0), text_prompt, hh)).pairs
    assert pairs[0].prompt == [system("Be kind."), user("Hi 0?"), assistant("Hello."), user("How are you?")]
    assert (pairs[0].chosen, pairs[0].rejected) == ("Well, thanks.", "Go away.")
    assert pairs[1].prompt[1] == user("Hi 1?")
    # Texts part by characters, as TRL's extract_prompt does, and a space at the parting stays with the answers.
    assert pairs[2].prompt == [user("\n\nHuman: Sky?\n\nAssistant: It")]
    assert (pairs[2].chosen, pairs[2].rejected) == (" is blue.", " was red.")


@pytest.mark.parametrize(
    "row, field, message",
    [
        (
            {"chosen": [user("A?"), assistant("1")], "rejected": [user("B?"), assistant("2")]},
            "rejected[0]",
            "differs from 'chosen[0]': the two conversations share no first turn",
        ),
        (
            {
                "chosen": [user("A?"), assistant("1"), user("More?"), assistant("2")],
                "rejected": [user("A?"), assistant("3"), user("More?"), assistant("4")],
            },
            "chosen[1]",
            "differs from 'rejected[1]' before the last assistant turn; in an implicit-prompt row only the final "
            "assistant answer may differ",
        ),
        (
            {"chosen": [user("A?")], "rejected": [user("A?"), assistant("1")]},
            "chosen",
            "ends where the two conversations part (after 1 turns), so it has no answer",
        ),
        ({"chosen": "Sky is blue", "rejected": "Grass is green"}, "rejected", "shares no beginning with 'chosen'"),
    ],
)
def test_an_implicit_row_that_cannot_be_split_is_one_line_naming_file_line_and_field(tmp_path, row, field, message):
    data = write_jsonl(tmp_path / "rows.jsonl", implicit(0), row)
    with pytest.raises(MlxDpoError) as raised:
        load_pairs(data)
    lines = str(raised.value).splitlines()
    assert lines[0] == f"{data}: 1 invalid row:" and len(lines) == 3
    assert lines[1].startswith(f"  {data}:2: field '{field}': {message}")


# --- unpaired rows (KTO) ----------------------------------------------------------------------------------

UNPAIRED = [
    {"prompt": [user("Hi?")], "completion": [assistant("Hello!")], "label": True},
    {"prompt": [user("Hi?")], "completion": [assistant("Go away.")], "label": False},
]


def test_unpaired_rows_are_kto_data_from_any_source_and_one_clear_line_for_a_pair_method(hf_home, tmp_path):
    hub_dataset(hf_home, "acme/kto", {"data/train-0.parquet": UNPAIRED})
    examples, skipped = load_feedback("acme/kto")
    assert [(e.completion, e.desirable, e.source) for e in examples] == [
        ("Hello!", True, "hf://datasets/acme/kto/data/train-0.parquet row 0"),
        ("Go away.", False, "hf://datasets/acme/kto/data/train-0.parquet row 1"),
    ]
    with pytest.raises(
        UnpairedRows,
        match=r"acme/kto:train: holds unpaired rows \(prompt, completion, label\), which "
        r"only --loss kto trains on",
    ):
        load_pairs("acme/kto")
    # Implicit-prompt pairs are KTO data too: each gives a good and a bad answer.
    assert [(e.completion, e.desirable) for e in load_feedback(write_jsonl(tmp_path / "i.jsonl", implicit(0)))[0]] == [
        ("Well, thanks.", True),
        ("Go away.", False),
    ]


def test_data_import_takes_a_hub_dataset_and_keeps_unpaired_rows_as_answers_marked_good_or_bad(
    hf_home, workspace, capsys
):
    from mlx_dpo.cli import main

    hub_dataset(hf_home, "acme/prefs", {"data/train-0.parquet": [implicit(0), implicit(1)]})
    hub_dataset(hf_home, "acme/kto", {"data/train-0.parquet": UNPAIRED})
    assert main(["data", "import", "acme/prefs", "--workspace", str(workspace)]) == 0
    assert main(["data", "import", "acme/kto", "--workspace", str(workspace)]) == 0
    assert main(["data", "import", "acme/kto", "--workspace", str(workspace)]) == 0  # again: all duplicates
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("imported 2 pair(s) into ")
    assert out[1].startswith("imported 2 answer(s) marked good or bad into ") and "(0 already there)" in out[1]
    assert "imported 0 answer(s)" in out[2] and "(2 already there)" in out[2]
    with PreferenceStore(workspace) as store:
        assert [p.chosen for p in store.list_pairs()] == ["Well, thanks.", "Well, thanks."]
        assert [(f.completion, f.desirable) for f in store.list_feedback()] == [("Hello!", True), ("Go away.", False)]


# --- the command a user types -----------------------------------------------------------------------------


def test_train_by_hub_name_on_an_implicit_prompt_parquet_dataset_and_a_bad_row_named(tiny, tmp_path):
    home = tmp_path / "hf-home"
    hub_dataset(
        home,
        "acme/hh",
        {
            "data/train-00000-of-00001.parquet": [implicit(i) for i in range(4)],
            "data/test-00000-of-00001.parquet": [implicit(9)],
        },
    )
    hub_dataset(home, "acme/broken", {"data/train-00000-of-00001.parquet": BAD})
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    common = ["--model", str(tiny), "--iters", "2", "--batch-size", "2", "--no-compile"]
    ok = run_cli(
        "train", "--data", "acme/hh", "--valid-data", "acme/hh", "--adapter-path", str(tmp_path / "a"), *common, env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "a" / "adapters.safetensors").is_file()
    bad = run_cli("train", "--data", "acme/broken", "--adapter-path", str(tmp_path / "b"), *common, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        "  hf://datasets/acme/broken/data/train-00000-of-00001.parquet row 1: field 'chosen[0].content': is empty"
        in bad.stderr
    )
    assert not (tmp_path / "b").exists()


def test_a_file_given_a_data_config_is_refused(tmp_path):
    data = write_demo_pairs(tmp_path / "p.jsonl", 2)
    with pytest.raises(MlxDpoError, match="--data-config x: applies to a dataset"):
        load_pairs(data, config="x")
