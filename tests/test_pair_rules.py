"""One set of pair rules (`mlx_dpo.data.pairs.check_pair`): the JSONL reader, the store and the app refuse
the same bad pair for the same reason, each in the words it shows (file:line:field, one line, a sentence)."""

from __future__ import annotations

import json

import pytest
from helpers import errors, model_ready

from mlx_dpo.data.pairs import (
    IDENTICAL_ANSWERS,
    TWO_DIFFERENT_ANSWERS,
    RowError,
    describe_problems,
    load_pairs,
    pair_problem,
    same_answers,
)
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from tui.app import MlxDpoApp
from tui.workers import SampleSettings

GOOD = {"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "Five."}

# (prompt, chosen, rejected): each breaks exactly one rule.
BAD_PAIRS = [
    ("", "A.", "B."),
    ("   ", "A.", "B."),
    ("Q?", "", "B."),
    ("Q?", "A.", " \n"),
    ("Q?", "Same answer.", "  Same answer.\n"),
    ([{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}], "A.", "B."),
    ([{"role": "bot", "content": "Q?"}], "A.", "B."),
    (
        [{"role": "user", "content": "Q?"}, {"role": "system", "content": "S."}, {"role": "user", "content": "Q?"}],
        "A.",
        "B.",
    ),
]


@pytest.mark.parametrize("prompt, chosen, rejected", BAD_PAIRS)
def test_the_reader_and_the_store_refuse_a_bad_pair_with_the_same_problem(tmp_path, prompt, chosen, rejected):
    problem = pair_problem(prompt, chosen, rejected)
    assert problem is not None
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps(GOOD) + "\n" + json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n",
        encoding="utf-8",
    )
    # The reader: file, line, and the function's field and message.
    (error,) = load_pairs(path, skip_invalid=True).errors
    assert error == RowError(str(path), 2, *problem)
    with PreferenceStore(tmp_path / "ws") as store:
        # The store: the same problem, in one line.
        with pytest.raises(MlxDpoError) as raised:
            store.add_pair(prompt, chosen, rejected)
        assert str(raised.value) == describe_problems([problem])
        good = store.add_pair("Q?", "A.", "B.")
        with pytest.raises(MlxDpoError) as raised:  # an edit is checked alike
            store.update_pair(good.id, prompt=prompt, chosen=chosen, rejected=rejected)
        assert str(raised.value) == describe_problems([problem])
        # Importing the file drops the row with the reader's message.
        assert store.import_jsonl(path, skip_invalid=True).errors == [str(error)]


def test_identical_answers_read_alike_everywhere(tmp_path):
    """The rule whose wording the user meets most, spelled out on every surface."""
    assert pair_problem("Q?", "Same.", " Same.\n") == IDENTICAL_ANSWERS
    assert same_answers("Same.", " Same.\n") and not same_answers("Same.", "Same!")
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps(GOOD) + "\n" + json.dumps({"prompt": "Q?", "chosen": "Same.", "rejected": " Same.\n"}) + "\n",
        encoding="utf-8",
    )
    (error,) = load_pairs(path, skip_invalid=True).errors
    assert str(error) == f"{path}:2: field 'rejected': is identical to 'chosen'; a pair needs two different answers"
    with PreferenceStore(tmp_path / "ws") as store, pytest.raises(MlxDpoError) as raised:
        store.add_pair("Q?", "Same.", " Same.\n")
    assert str(raised.value) == "chosen and rejected are identical; a pair needs two different answers"
    assert TWO_DIFFERENT_ANSWERS in str(error) and TWO_DIFFERENT_ANSWERS in str(raised.value)


def test_a_bad_id_hides_the_identical_answers_of_its_row(tmp_path):
    """The answers are compared only in an otherwise good row, as before the rules had one home."""
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps(GOOD) + "\n" + json.dumps({"id": "", "prompt": "Q?", "chosen": "A.", "rejected": "A."}) + "\n",
        encoding="utf-8",
    )
    assert load_pairs(path, skip_invalid=True).errors == [RowError(str(path), 2, "id", "is empty")]


# --- the app: the Write screen refuses the same pairs, in its own sentences ---------------------------------

APP_CASES = [
    (("", "A.", "B."), "The prompt is empty: type the prompt first.", "write-prompt"),
    (("Q?", "", "B."), "The chosen (better) answer is empty.", "write-chosen"),
    (("Q?", "A.", " \n"), "The rejected (worse) answer is empty.", "write-rejected"),
    (
        ("Q?", "Same answer.", "  Same answer.\n"),
        f"Chosen and rejected are identical: {TWO_DIFFERENT_ANSWERS}.",
        "write-rejected",
    ),
]


@pytest.mark.anyio
async def test_the_write_screen_refuses_the_pairs_the_store_refuses(tiny, workspace):
    app = MlxDpoApp(workspace, model=str(tiny), settings=SampleSettings(max_tokens=4))
    async with app.run_test(size=(120, 36)) as pilot:
        await model_ready(pilot)
        await pilot.press("f2")
        screen = app.screen
        for (prompt, chosen, rejected), message, focus in APP_CASES:
            with pytest.raises(MlxDpoError):  # the store refuses it too
                app.store.add_pair(prompt, chosen, rejected)
            for field, text in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
                screen.query_one(f"#write-{field}").text = text
            await pilot.press("ctrl+s")
            assert errors(app)[-1].endswith(message)  # after the notice's title
            assert app.focused is not None and app.focused.id == focus
        assert app.store.count_pairs() == 0
        screen.query_one("#write-rejected").text = "A different answer."
        await pilot.press("ctrl+s")
        assert app.store.count_pairs() == 1
