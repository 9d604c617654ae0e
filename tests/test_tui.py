"""The terminal app, driven with keys through Textual's Pilot against the real store and a real (tiny) model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, make_tiny_model_folder, sample_answers, wait_until
from mlx_dpo.store import PreferenceStore
from tui.app import MlxDpoApp
from tui.backend import SampleSettings
from tui.modals import ConfirmModal, EditAnswersModal, PairModal, PathModal, SettingsModal

pytestmark = pytest.mark.anyio  # the async tests run on asyncio through anyio's pytest plugin

SIZE = (120, 36)
FAST = SampleSettings(max_tokens=12)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, default_model_path) -> Path:
    return make_tiny_model_folder(tmp_path_factory.mktemp("models") / "tiny-llama", default_model_path)


@pytest.fixture
def workspace(tmp_path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture
def make_app(tiny_model, workspace):
    def make(**kwargs) -> MlxDpoApp:
        kwargs.setdefault("settings", FAST)
        return MlxDpoApp(workspace, model=str(tiny_model), **kwargs)

    return make


def reopen(workspace: Path) -> PreferenceStore:
    return PreferenceStore(workspace)


def errors(app: MlxDpoApp) -> list[str]:
    return [text for severity, text in app.notices if severity == "error"]


def warnings(app: MlxDpoApp) -> list[str]:
    return [text for severity, text in app.notices if severity == "warning"]


async def model_ready(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.model_state == "ready", what="the model")


async def type_into(pilot, text: str) -> None:
    await pilot.press(*text)


def add_pairs(workspace: Path, count: int) -> list[int]:
    with PreferenceStore(workspace) as store:
        return [
            store.add_pair([{"role": "user", "content": f"question {i}"}], f"good answer {i}", f"bad answer {i}",
                           label=False).id
            for i in range(1, count + 1)
        ]


# --- Label ----------------------------------------------------------------------------------------------------


async def test_label_a_sampled_pair(make_app, workspace, tiny_model):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        first, second = await sample_answers(pilot, "Name a colour.")
        assert first and second and first != second
        await pilot.press("1")
        screen = app.get_screen("label")
        assert screen.status_text.startswith("saved pair #")
        assert app.pair_counts == (1, 0, 0)
        await pilot.press("1")  # the same answers cannot be labeled twice
        assert any("Already labeled" in w for w in warnings(app))
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert pair.prompt == [{"role": "user", "content": "Name a colour."}]
    assert (pair.chosen, pair.rejected) == (first, second)
    assert pair.origin == "sampled" and pair.sampler == str(tiny_model) and pair.note is None


async def test_second_answer_chosen_with_system_message(make_app, workspace):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.click("#system")
        await type_into(pilot, "Be brief.")
        await pilot.press("tab")  # on to the prompt editor
        first, second = await sample_answers(pilot, "Hi")
        await pilot.click("#pick-2")  # the mouse works too
        await wait_until(pilot, lambda: app.pair_counts[0] == 1)
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert pair.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (pair.chosen, pair.rejected) == (second, first)


async def test_edit_answers_before_saving(make_app, workspace):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        first, second = await sample_answers(pilot, "Say something.")
        await pilot.press("e")
        assert isinstance(app.screen, EditAnswersModal)
        await type_into(pilot, "EDITED ")  # the cursor starts at the beginning of answer 1
        await pilot.press("ctrl+s")  # keep the edits
        assert not isinstance(app.screen, EditAnswersModal)
        assert app.get_screen("label").answers() == ("EDITED " + first, second)
        await pilot.press("2")
        await wait_until(pilot, lambda: app.pair_counts[0] == 1)
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert (pair.chosen, pair.rejected) == (second, "EDITED " + first)
    assert pair.origin == "sampled" and pair.note == "answers edited before labeling"


async def test_undo_puts_the_label_back_on_screen(make_app, workspace):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        first, second = await sample_answers(pilot, "Undo me")
        await pilot.press("1")
        assert app.pair_counts[0] == 1
        await pilot.press("n")  # a new, empty prompt
        screen = app.get_screen("label")
        assert screen.query_one("#prompt").text == "" and screen.state == "idle"
        await pilot.press("escape", "u")
        assert app.pair_counts[0] == 0
        assert screen.query_one("#prompt").text == "Undo me"
        assert screen.answers() == (first, second) and screen.state == "ready"
        await pilot.press("2")  # label it again, the other way round
        await pilot.press("u", "u")  # the second undo finds nothing
        assert any("Nothing to undo" in w for w in warnings(app))
    with reopen(workspace) as store:
        assert store.count_pairs() == 0
        assert store.stats()["skips"] == 0


async def test_tie_saves_no_pair(make_app, workspace):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        first, second = await sample_answers(pilot, "A tie")
        await pilot.press("t")
        assert app.get_screen("label").status_text.startswith("tie recorded")
        assert app.pair_counts == (0, 0, 1)
    with reopen(workspace) as store:
        assert store.count_pairs() == 0
        (skip,) = store.list_skips()
    assert skip.reason == "tie" and skip.answers == [first, second]
    assert skip.prompt == [{"role": "user", "content": "A tie"}]


async def test_empty_prompt_and_nothing_to_label(make_app, workspace):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        assert any("prompt is empty" in e for e in errors(app))
        await pilot.press(*"   ", "ctrl+s")  # blank is empty too
        assert len([e for e in errors(app) if "prompt is empty" in e]) == 2
        await pilot.press("escape", "1")
        assert any("Nothing to label" in w for w in warnings(app))
        assert app.get_screen("label").state == "idle"
    with reopen(workspace) as store:
        assert store.count_pairs() == 0


async def test_identical_answers_cannot_be_saved(make_app, workspace):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("escape", "s")  # settings: greedy decoding makes both answers the same
        assert isinstance(app.screen, SettingsModal)
        await pilot.press(*["backspace"] * 5, "0", "enter")
        screen = app.get_screen("label")
        assert screen.settings.temperature == 0
        await pilot.press("p")
        first, second = await sample_answers(pilot, "Same twice")
        assert first == second
        assert "identical" in screen.status_text
        await pilot.press("1")
        assert any("identical" in e for e in errors(app))
        # Editing one of them makes a pair.
        await pilot.press("e", *"Different: ", "ctrl+s", "1")
        await wait_until(pilot, lambda: app.pair_counts[0] == 1)
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert pair.chosen == "Different: " + first and pair.rejected == first


async def test_settings_modal_rejects_bad_values(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("escape", "s", "tab", *["backspace"] * 3, *"1.5", "enter")
        modal = app.screen
        assert isinstance(modal, SettingsModal)
        assert "top-p" in str(modal.query_one(".modal-error").render())
        await pilot.press("escape")
        assert app.get_screen("label").settings == FAST


async def test_resample_replaces_older_answers(make_app):
    """A newer request stops the older one: only the newest request's answers reach the panes."""
    app = make_app(settings=SampleSettings(max_tokens=40, seed=11))
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        screen = app.get_screen("label")
        await pilot.press(*"Count", "ctrl+s")
        await pilot.pause(0.05)
        await pilot.press("r")  # seed 11 -> 13
        assert screen.settings.seed == 13
        resampled = await sample_answers(pilot)
        # The same request again (seed 13 and 14) must give exactly the same answers: nothing leaked in.
        await pilot.press("s")
        await pilot.press("tab", "tab", "tab", *["backspace"] * 3, *"13", "enter")
        again = await sample_answers(pilot)
        assert resampled == again


async def test_prompt_queue(make_app, workspace, tmp_path):
    queue = tmp_path / "prompts.txt"
    queue.write_text("first prompt\n\nsecond prompt\nthird prompt\n")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        screen = app.get_screen("label")
        await pilot.press("escape", "o")
        assert isinstance(app.screen, PathModal)
        await pilot.press(*str(queue), "enter")
        assert "1/3" in str(screen.query_one("#queue-status").render())
        await wait_until(pilot, lambda: screen.state == "ready")
        await pilot.press("1")  # saved, and the queue moves on by itself
        assert "2/3" in str(screen.query_one("#queue-status").render())
        assert screen.query_one("#prompt").text == "second prompt"
        await wait_until(pilot, lambda: screen.state == "ready")
        await pilot.press("t")
        assert screen.query_one("#prompt").text == "third prompt"
        await pilot.press("u")  # undo the tie: back to the second prompt, position 2/3
        assert screen.query_one("#prompt").text == "second prompt"
        assert "2/3" in str(screen.query_one("#queue-status").render())
        await pilot.press("n", "n")  # skip ahead to the third prompt, then past the end
        assert any("queue is done" in text for _, text in app.notices)
        # A JSONL queue with a system message; and a malformed one.
        rows = tmp_path / "prompts.jsonl"
        rows.write_text(json.dumps({"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]})
                        + "\n" + json.dumps({"prompt": "plain"}) + "\n")
        await pilot.press("escape", "o", *str(rows), "enter")
        assert screen.query_one("#system").value == "S" and screen.query_one("#prompt").text == "U"
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "ok"}\n{"nope": 1}\nnot json\n')
        await pilot.press("escape", "o", *str(bad), "enter")
        assert any("bad.jsonl:2" in e and "bad.jsonl:3" in e for e in errors(app))
        assert "2" in str(screen.query_one("#queue-status").render())  # the JSONL queue is still loaded
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert pair.prompt == [{"role": "user", "content": "first prompt"}]


# --- Write ----------------------------------------------------------------------------------------------------


async def test_write_screen_saves_a_typed_pair(make_app, workspace):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        assert app.current_mode == "write"
        await pilot.press("ctrl+s")
        assert any("prompt is empty" in e for e in errors(app))
        await type_into(pilot, "What is 2+2?")
        await pilot.press("tab", *"4", "tab", *"4", "ctrl+s")
        assert any("identical" in e for e in errors(app))
        await pilot.press(*" maybe", "ctrl+s")
        await wait_until(pilot, lambda: app.pair_counts[0] == 1)
        # The answers are cleared for the next pair; the prompt stays.
        screen = app.screen
        assert screen.query_one("#write-chosen").text == "" and screen.query_one("#write-prompt").text == "What is 2+2?"
        await pilot.press("f1", "u")  # a typed pair is not a label: undo leaves it alone
        assert any("Nothing to undo" in w for w in warnings(app))
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert (pair.chosen, pair.rejected, pair.origin) == ("4", "4 maybe", "typed")
    assert pair.prompt == [{"role": "user", "content": "What is 2+2?"}]


# --- Data -----------------------------------------------------------------------------------------------------


async def test_data_delete_needs_confirmation(make_app, workspace):
    ids = add_pairs(workspace, 3)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        screen = app.screen
        assert screen.pair_ids == ids[::-1]  # newest first
        await pilot.press("down", "delete")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        assert screen.pair_ids == ids[::-1]
        await pilot.press("delete", "y")
        assert screen.pair_ids == [ids[2], ids[0]]
        assert screen.current_id() == ids[0]
    with reopen(workspace) as store:
        assert [p.id for p in store.list_pairs()] == [ids[2], ids[0]]


async def test_data_swap_move_search_and_filter(make_app, workspace):
    ids = add_pairs(workspace, 3)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        screen = app.screen
        await pilot.press("s")  # newest pair: swap chosen and rejected
        await pilot.press("down", "v")  # the middle one goes to validation
        assert app.pair_counts == (2, 1, 0)
        await pilot.press("f")  # filter: train only
        assert screen.pair_ids == [ids[2], ids[0]]
        await pilot.press("f")  # valid only
        assert screen.pair_ids == [ids[1]]
        await pilot.press("v", "f")  # back to train; then all splits
        assert screen.pair_ids == ids[::-1] and app.pair_counts == (3, 0, 0)
        await pilot.press("v")
        await pilot.press("slash", *"answer 3")
        assert screen.pair_ids == [ids[2]]
        await pilot.press("escape", *["backspace"] * 3)  # keys go to the table, not the search box
        assert screen.query_one("#search").value == "answer 3"
        await pilot.click("#search")
        await pilot.press(*["backspace"] * 8)
        assert len(screen.pair_ids) == 3
    with reopen(workspace) as store:
        newest = store.get_pair(ids[2])
        assert (newest.chosen, newest.rejected) == ("bad answer 3", "good answer 3")
        assert store.get_pair(ids[2]).split == "valid"  # moved by the second `v` on the first row
        assert store.get_pair(ids[1]).split == "train"


async def test_data_view_and_edit_a_pair(make_app, workspace):
    (pair_id,) = add_pairs(workspace, 1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3", "enter")
        assert isinstance(app.screen, PairModal)
        await pilot.press(*"Please: ", "ctrl+s")  # prepend to the prompt
        assert not isinstance(app.screen, PairModal)
        await pilot.press("enter", "tab", "tab")  # on to chosen, make it equal to rejected: refused
        modal = app.screen
        modal.query_one("#pair-chosen").text = "bad answer 1"
        await pilot.press("ctrl+s")
        assert "identical" in str(modal.query_one(".modal-error").render())
        await pilot.press("escape")
    with reopen(workspace) as store:
        pair = store.get_pair(pair_id)
    assert pair.prompt == [{"role": "user", "content": "Please: question 1"}]
    assert pair.chosen == "good answer 1"


async def test_data_import_and_export(make_app, workspace, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) for i in range(3)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "same", "rejected": "same"}\n{broken\n')
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3", "i")
        assert isinstance(app.screen, PathModal)
        await pilot.press(*str(bad), "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        (error,) = errors(app)
        assert error.startswith("Import failed: ") and "bad.jsonl" in error
        assert app.pair_counts == (0, 0, 0)
        await pilot.press("i", *str(tmp_path / "missing.jsonl"), "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "missing.jsonl" in errors(app)[-1]
        await pilot.press("i", *str(good), "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.pair_counts == (3, 0, 0) and len(app.screen.pair_ids) == 3
        assert any("imported 3 pairs" in text for _, text in app.notices)
        out = tmp_path / "out.jsonl"
        await pilot.press("x", *["backspace"] * 200, *str(out), "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert len(out.read_text().splitlines()) == 3
    with reopen(workspace) as store:
        assert {p.origin for p in store.list_pairs()} == {"imported"}


# --- the app as a whole -----------------------------------------------------------------------------------


async def test_command_palette_runs_screen_actions(make_app, workspace):
    add_pairs(workspace, 1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Go to Data", "Label: Answer 1 is better: save the pair", "Label: Undo", "Data: Swap",
                      "Data: Import", "Write: Save pair"):
            assert title in titles
        await pilot.press("ctrl+p", *"data: swap")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "data")
        await pilot.pause()
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert pair.chosen == "bad answer 1"


async def test_bad_workspace_is_refused_before_the_app_starts(tmp_path, tiny_model):
    from mlx_dpo.errors import MlxDpoError

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(MlxDpoError, match="is a file"):
        MlxDpoApp(not_a_folder, model=str(tiny_model))


async def test_model_that_cannot_load_is_reported(workspace, tmp_path):
    app = MlxDpoApp(workspace, model=str(tmp_path / "no-such-model"), settings=FAST)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model_state == "failed")
        assert "no-such-model" in errors(app)[0]
        await pilot.press(*"hello", "ctrl+s")
        assert "Cannot sample" in errors(app)[-1]
        await pilot.press("f2", *"still", "tab", *"works", "tab", *"fine", "ctrl+s")  # the rest of the app works
        assert app.pair_counts[0] == 1


async def test_first_screen_is_drawn_while_the_model_loads(workspace, capsys):
    """The real default model (several seconds to load on CPU): the app is usable long before it is ready."""
    started = time.perf_counter()
    app = MlxDpoApp(workspace, settings=FAST)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.first_screen_at is not None, what="the first screen")
        first_screen = app.first_screen_at - started
        screen = app.get_screen("label")
        status = str(screen.query_one("#model-text").render())
        assert app.model_state == "loading" and "SmolLM2-135M-Instruct" in status, status
        assert screen.query_one("#model-progress").display
        # Interactive while loading: write and save a pair, come back, queue a sample.
        await pilot.press("f2", *"typed while loading", "tab", *"a", "tab", *"b", "ctrl+s", "f1")
        assert app.pair_counts[0] == 1
        await pilot.press(*"Hello", "ctrl+s")
        assert app.model_state == "loading", "the model loaded too fast for this test to mean anything"
        assert "waiting for the model" in screen.query_one("#answer-1").border_subtitle
        await wait_until(pilot, lambda: app.model_state == "ready", timeout=120, what="the default model")
        ready = time.perf_counter() - started
        assert str(screen.query_one("#model-text").render()) == "● model ready: SmolLM2-135M-Instruct"
        assert not screen.query_one("#model-progress").display
        await wait_until(pilot, lambda: screen.state == "ready", timeout=60, what="the queued sample")
    with capsys.disabled():
        print(f"\n[tui] first screen drawn after {first_screen * 1000:.0f} ms; default model ready after {ready:.1f} s")
    assert first_screen < 3.0


# --- durability -----------------------------------------------------------------------------------------------


def test_labels_acknowledged_as_saved_survive_sigkill(tiny_model, workspace, capsys):
    """A child runs the real app under Pilot and labels pairs with keys, printing "ack N ID" after each
    "saved" appears; after a few acks it is SIGKILLed mid-stride. Every acknowledged pair must be there."""
    wanted = 4
    child = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "tui_labeler.py"), str(workspace), str(tiny_model)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=os.environ.copy(),
    )
    acked: dict[int, int] = {}
    first_screen = None
    try:
        deadline = time.monotonic() + 120
        while len(acked) < wanted:
            assert time.monotonic() < deadline, "the labeler child is too slow"
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"the labeler child exited early:\n{child.stderr.read()}")
            if line.startswith("first-screen-ms"):
                first_screen = float(line.split()[1])
            if line.startswith("ack "):
                _, n, pair_id = line.split()
                acked[int(n)] = int(pair_id)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with reopen(workspace) as store:
        assert store.integrity_check() == "ok"
        pairs = {p.id: p for p in store.list_pairs()}
        assert len(pairs) >= wanted  # a label may have been saved after the last ack was read
        for n, pair_id in acked.items():
            assert pairs[pair_id].prompt == [{"role": "user", "content": f"prompt number {n}"}]
            assert pairs[pair_id].origin == "sampled"
    with capsys.disabled():
        print(f"\n[tui] child process: first screen {first_screen:.0f} ms after the script started; "
              f"{len(acked)} acks, then SIGKILL; {len(pairs)} pairs intact")
