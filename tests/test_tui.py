"""The terminal app, driven with keys through Textual's Pilot against the real store and a real (tiny) model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from helpers import (
    REPO,
    assert_clean_error,
    errors,
    model_ready,
    run_cli,
    sample_answers,
    type_text,
    wait_until,
    warnings,
)
from textual import events

from mlx_dpo.data.store import PreferenceStore
from tui.app import MlxDpoApp
from tui.modals import ConfirmModal, EditAnswersModal, PairModal, PathModal, SettingsModal
from tui.workers import ModelWorker, SampleSettings

pytestmark = pytest.mark.anyio  # the async tests run on asyncio through anyio's pytest plugin

SIZE = (120, 36)
FAST = SampleSettings(max_tokens=12)


@pytest.fixture
def make_app(tiny, workspace):
    def make(**kwargs) -> MlxDpoApp:
        kwargs.setdefault("settings", FAST)
        return MlxDpoApp(workspace, model=str(tiny), **kwargs)

    return make


def reopen(workspace: Path) -> PreferenceStore:
    return PreferenceStore(workspace)


@asynccontextmanager
async def started(app: MlxDpoApp):
    """Run the app headless and wait for the (tiny) model: Pilot's key presses wait for the whole process
    to go idle, so keys pressed while the model thread loads would each take up to two seconds."""
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        yield pilot


async def send_keys(pilot, *keys: str) -> None:
    """Post key events straight to the app. (Pilot.press waits for the whole process to go idle after each
    key, which does not happen while the model thread is busy loading.)"""
    for key in keys:
        pilot.app.post_message(events.Key(key, key if len(key) == 1 else None))
        for _ in range(3):
            await pilot.pause(0)


def focused_id(app) -> str | None:
    return app.focused.id if app.focused is not None else None


def add_pairs(workspace: Path, count: int) -> list[int]:
    with PreferenceStore(workspace) as store:
        return [
            store.add_pair(
                [{"role": "user", "content": f"question {i}"}], f"good answer {i}", f"bad answer {i}", label=False
            ).id
            for i in range(1, count + 1)
        ]


# --- Label ----------------------------------------------------------------------------------------------------


async def test_label_sampled_pairs(make_app, workspace, tiny):
    app = make_app()
    async with started(app) as pilot:
        screen = app.get_screen("label")
        # Bad input first: an empty prompt, and labeling before anything was sampled.
        await pilot.press("ctrl+s")
        assert any("prompt is empty" in e for e in errors(app))
        await type_text(pilot, "   ")  # blank is empty too
        await pilot.press("ctrl+s")
        assert len([e for e in errors(app) if "prompt is empty" in e]) == 2
        await pilot.press("escape", "1")
        assert any("Nothing to label" in w for w in warnings(app))
        # A system message, a prompt, two answers, answer 1 chosen.
        await pilot.click("#system")
        await type_text(pilot, "Be brief.")
        await pilot.press("tab", "ctrl+a", "ctrl+k")  # on to the prompt editor, clear the blanks
        first, second = await sample_answers(pilot, "Name a colour.")
        assert first and second and first != second
        await pilot.press("1")
        assert screen.status_text.startswith("saved pair #")
        assert app.pair_counts == (1, 0, 0)
        await pilot.press("1")  # the same answers cannot be labeled twice
        assert any("Already labeled" in w for w in warnings(app))
        # Resample, and pick answer 2 with the mouse.
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.state == "ready", what="resampled answers")
        third, fourth = screen.answers()
        await pilot.click("#pick-2")
        await wait_until(pilot, lambda: app.pair_counts[0] == 2)
        # In the editor, label keys are just text.
        await pilot.press("p", "ctrl+end")
        await type_text(pilot, " 1 2 t u n")
        await pilot.press("escape")
        assert screen.query_one("#prompt").text == "Name a colour. 1 2 t u n" and app.pair_counts == (2, 0, 0)
    with reopen(workspace) as store:
        newer, older = store.list_pairs()
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    assert older.prompt == newer.prompt == prompt
    assert (older.chosen, older.rejected) == (first, second)
    assert (newer.chosen, newer.rejected) == (fourth, third)
    assert {older.origin, newer.origin} == {"sampled"} and older.sampler == str(tiny) and older.note is None


async def test_answers_not_judged_before_a_quit_come_back_in_the_next_session(make_app, workspace):
    async with started(make_app()) as pilot:
        first, second = await sample_answers(pilot, "Name a colour.")
    with reopen(workspace) as store:  # kept in the store, not in the app's memory
        (kept,) = store.list_candidates()
    assert kept.answers == [first, second] and kept.prompt == [{"role": "user", "content": "Name a colour."}]

    app = make_app()
    async with started(app) as pilot:
        screen = app.get_screen("label")
        assert screen.state == "ready" and screen.answers() == (first, second)
        assert screen.query_one("#prompt").text == "Name a colour."
        await pilot.press("2")
        assert app.pair_counts == (1, 0, 0)
        # Answers that are skipped (n) are not brought back either.
        await pilot.press("n")  # a new, empty prompt, focused
        await sample_answers(pilot, "Name a fruit.")
        await pilot.press("escape", "n")
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
        assert store.list_candidates() == []
    assert (pair.chosen, pair.rejected) == (second, first)


async def test_edit_answers_before_saving(make_app, workspace):
    app = make_app()
    async with started(app) as pilot:
        first, second = await sample_answers(pilot, "Say something.")
        await pilot.press("e")
        assert isinstance(app.screen, EditAnswersModal)
        await type_text(pilot, "EDITED ")  # the cursor starts at the beginning of answer 1
        await pilot.press("ctrl+s")  # keep the edits
        assert not isinstance(app.screen, EditAnswersModal)
        assert app.get_screen("label").answers() == ("EDITED " + first, second)
        await pilot.press("2")
        await wait_until(pilot, lambda: app.pair_counts[0] == 1)
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert (pair.chosen, pair.rejected) == (second, "EDITED " + first)
    assert pair.origin == "sampled" and pair.note == "answers edited before labeling"


async def test_undo_and_tie(make_app, workspace):
    app = make_app()
    async with started(app) as pilot:
        screen = app.get_screen("label")
        first, second = await sample_answers(pilot, "Undo me")
        await pilot.press("1")
        assert app.pair_counts[0] == 1
        await pilot.press("n")  # a new, empty prompt
        assert screen.query_one("#prompt").text == "" and screen.state == "idle"
        await pilot.press("escape", "u")  # the pair is gone, its prompt and answers are back
        assert app.pair_counts[0] == 0
        assert screen.query_one("#prompt").text == "Undo me"
        assert screen.answers() == (first, second) and screen.state == "ready"
        await pilot.press("t")  # now call it a tie: no pair, one skip
        assert screen.status_text.startswith("tie recorded")
        assert app.pair_counts == (0, 0, 1)
        with reopen(workspace) as store:
            assert store.count_pairs() == 0
            (skip,) = store.list_skips()
        assert skip.reason == "tie" and skip.answers == [first, second]
        assert skip.prompt == [{"role": "user", "content": "Undo me"}]
        await pilot.press("u")  # undo the tie too
        assert app.pair_counts == (0, 0, 0) and screen.answers() == (first, second)
        await pilot.press("u")
        assert any("Nothing to undo" in w for w in warnings(app))
    with reopen(workspace) as store:
        assert store.count_pairs() == 0 and store.stats()["skips"] == 0


async def test_identical_answers_cannot_be_saved(make_app, workspace):
    app = make_app()
    async with started(app) as pilot:
        screen = app.get_screen("label")
        await pilot.press("escape", "s")  # the settings modal; a bad value is refused in place
        assert isinstance(app.screen, SettingsModal)
        await pilot.press("tab", "end", "ctrl+u")
        await type_text(pilot, "1.5")
        await pilot.press("enter")
        assert isinstance(app.screen, SettingsModal)
        assert "top-p" in str(app.screen.query_one(".modal-error").render())
        # top-p back to 1, temperature 0: greedy decoding gives the same answer twice.
        await pilot.press("end", "ctrl+u", "1", "shift+tab", "end", "ctrl+u", "0", "enter")
        assert screen.settings == SampleSettings(temperature=0.0, max_tokens=FAST.max_tokens)
        assert screen.query_one("#prompt").border_subtitle.startswith("temp 0 ")
        await pilot.press("p")
        first, second = await sample_answers(pilot, "Same twice")
        assert first == second
        assert "identical" in screen.status_text
        await pilot.press("1")
        assert any("identical" in e for e in errors(app))
        assert app.pair_counts[0] == 0
        # Editing one of them makes a pair.
        await pilot.press("e")
        await type_text(pilot, "Different: ")
        await pilot.press("ctrl+s", "1")
        await wait_until(pilot, lambda: app.pair_counts[0] == 1)
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert pair.chosen == "Different: " + first and pair.rejected == first


async def test_resample_replaces_older_answers(make_app):
    """A newer request stops the older one: only the newest request's answers reach the panes."""
    app = make_app(settings=SampleSettings(max_tokens=24, seed=11))
    async with started(app) as pilot:
        screen = app.get_screen("label")
        await type_text(pilot, "Count")
        await send_keys(pilot, "ctrl+s", "r")  # at once: the second request (seeds 13, 14) replaces the first
        assert screen.settings.seed == 13
        resampled = await sample_answers(pilot)
        first_request = screen.request_id
        # The same request again must give exactly the same answers: nothing of the first one leaked in.
        await pilot.press("s", "tab", "tab", "tab", "end", "ctrl+u")
        await type_text(pilot, "13")
        await pilot.press("enter")
        again = await sample_answers(pilot)
        assert screen.request_id != first_request and resampled == again


async def test_prompt_queue(make_app, workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths are typed key by key: keep them short
    Path("q.txt").write_text("first prompt\n\nsecond prompt\nthird prompt\n")
    app = make_app()
    async with started(app) as pilot:
        screen = app.get_screen("label")
        await pilot.press("escape", "o")
        assert isinstance(app.screen, PathModal)
        await type_text(pilot, "q.txt")
        await pilot.press("enter")
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
        Path("q.jsonl").write_text(
            json.dumps({"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]})
            + "\n"
            + json.dumps({"prompt": "plain"})
            + "\n"
        )
        await pilot.press("escape", "o")
        await type_text(pilot, "q.jsonl")
        await pilot.press("enter")
        assert screen.query_one("#system").value == "S" and screen.query_one("#prompt").text == "U"
        Path("bad.jsonl").write_text('{"prompt": "ok"}\n{"nope": 1}\nnot json\n')
        await pilot.press("escape", "o")
        await type_text(pilot, "bad.jsonl")
        await pilot.press("enter")
        assert any("bad.jsonl:2" in e and "bad.jsonl:3" in e for e in errors(app))
        assert "1/2" in str(screen.query_one("#queue-status").render())  # the JSONL queue is still loaded
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert pair.prompt == [{"role": "user", "content": "first prompt"}]


# --- Write ----------------------------------------------------------------------------------------------------


async def test_write_screen_saves_a_typed_pair(make_app, workspace):
    app = make_app()
    async with started(app) as pilot:
        await pilot.press("f2")
        assert app.current_mode == "write"
        await pilot.press("ctrl+s")
        assert any("prompt is empty" in e for e in errors(app))
        await type_text(pilot, "What is 2+2?")
        await pilot.press("tab", "4", "tab", "4", "ctrl+s")
        assert any("identical" in e for e in errors(app))
        assert app.pair_counts[0] == 0
        await type_text(pilot, " maybe")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.pair_counts[0] == 1)
        # The answers are cleared for the next pair; the prompt stays.
        screen = app.screen
        assert screen.query_one("#write-chosen").text == "" and screen.query_one("#write-prompt").text == "What is 2+2?"
        await pilot.press("f1", "escape", "u")  # a typed pair is not a label: undo leaves it alone
        assert any("Nothing to undo" in w for w in warnings(app))
    with reopen(workspace) as store:
        (pair,) = store.list_pairs()
    assert (pair.chosen, pair.rejected, pair.origin) == ("4", "4 maybe", "typed")
    assert pair.prompt == [{"role": "user", "content": "What is 2+2?"}]


# --- Data -----------------------------------------------------------------------------------------------------


async def test_data_table_actions(make_app, workspace):
    """Swap (from the command palette), move to validation, filter, search, view/edit, delete with confirmation."""
    ids = add_pairs(workspace, 3)
    app = make_app()
    async with started(app) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in (
            "Go to Data",
            "Label: Answer 1 is better: save the pair",
            "Label: Undo the last label",
            "Data: Swap chosen and rejected of the selected pair",
            "Data: Import pairs from a JSONL file",
            "Write: Save the typed pair",
        ):
            assert title in titles
        await pilot.press("ctrl+p")
        await type_text(pilot, "data: swap chosen")
        await pilot.pause(0.3)
        await pilot.press("enter")  # switches to Data and swaps the newest pair
        await wait_until(pilot, lambda: app.current_mode == "data")
        screen = app.screen
        await wait_until(pilot, lambda: app.store.get_pair(ids[2]).chosen == "bad answer 3", what="the swap")
        assert screen.pair_ids == ids[::-1]  # newest first
        await pilot.press("down", "v")  # the middle one goes to validation
        assert app.pair_counts == (2, 1, 0)
        await pilot.press("f")  # filter: train only
        assert screen.pair_ids == [ids[2], ids[0]]
        await pilot.press("f")  # valid only
        assert screen.pair_ids == [ids[1]]
        await pilot.press("v", "f")  # back to train; then the pairs a program judged: none
        assert screen.view == "judged" and screen.pair_ids == []
        await pilot.press("f")  # all pairs
        assert screen.pair_ids == ids[::-1] and app.pair_counts == (3, 0, 0)
        await pilot.press("slash")
        await type_text(pilot, "answer 3")
        assert screen.pair_ids == [ids[2]]
        await pilot.press("escape", "s")  # keys go to the table again, not to the search box
        assert screen.query_one("#search").value == "answer 3"
        await pilot.press("slash", "ctrl+u", "enter")
        assert len(screen.pair_ids) == 3
        # View/edit the oldest pair.
        await pilot.press("ctrl+end", "enter")
        assert isinstance(app.screen, PairModal) and app.screen.pair.id == ids[0]
        await type_text(pilot, "Please: ")  # prepended to the prompt
        await pilot.press("ctrl+s")
        assert not isinstance(app.screen, PairModal)
        await pilot.press("enter")
        modal = app.screen
        modal.query_one("#pair-chosen").text = "bad answer 1"  # chosen == rejected: refused in the modal
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, PairModal) and "identical" in str(modal.query_one(".modal-error").render())
        await pilot.press("escape")
        # Delete the middle pair: "n" keeps it, "y" deletes it.
        await pilot.press("up", "delete")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        assert screen.pair_ids == ids[::-1]
        await pilot.press("delete", "y")
        assert screen.pair_ids == [ids[2], ids[0]] and screen.current_id() == ids[0]
    with reopen(workspace) as store:
        assert [p.id for p in store.list_pairs()] == [ids[2], ids[0]]
        newest, oldest = store.get_pair(ids[2]), store.get_pair(ids[0])
    assert (newest.chosen, newest.rejected) == ("good answer 3", "bad answer 3")  # swapped twice
    assert oldest.prompt == [{"role": "user", "content": "Please: question 1"}] and oldest.chosen == "good answer 1"


async def test_data_import_and_export(make_app, workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("good.jsonl").write_text(
        "\n".join(json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) for i in range(3))
    )
    Path("bad.jsonl").write_text('{"prompt": "q", "chosen": "same", "rejected": "same"}\n{broken\n')
    app = make_app()
    async with started(app) as pilot:
        await pilot.press("f3", "i")
        assert isinstance(app.screen, PathModal)
        await type_text(pilot, "bad.jsonl")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        (error,) = errors(app)
        assert error.startswith("Import failed: ") and "bad.jsonl" in error
        assert app.pair_counts == (0, 0, 0)
        await pilot.press("i")
        await type_text(pilot, "nope.jsonl")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "nope.jsonl" in errors(app)[-1]
        await pilot.press("i")
        await type_text(pilot, "good.jsonl")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.pair_counts == (3, 0, 0) and len(app.screen.pair_ids) == 3
        assert any("imported 3 pairs" in text for _, text in app.notices)
        await pilot.press("x", "home", "ctrl+k")
        await type_text(pilot, "o.jsonl")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert len(Path("o.jsonl").read_text().splitlines()) == 3
    with reopen(workspace) as store:
        assert {p.origin for p in store.list_pairs()} == {"imported"}


# --- the app as a whole -----------------------------------------------------------------------------------


async def test_bad_workspace_is_refused_before_the_app_starts(tmp_path, tiny):
    from mlx_dpo.errors import MlxDpoError

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(MlxDpoError, match="is a file"):
        MlxDpoApp(not_a_folder, model=str(tiny))


@pytest.mark.parametrize("command", [["tui"], []], ids=["mlx-dpo tui", "mlx-dpo"])
def test_the_cli_opens_the_app_on_the_workspace_it_names(tmp_path, command):
    # A file where the workspace should be is refused before anything is drawn, so the routing is
    # visible without a terminal: both spellings reach the app with the --workspace given.
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    result = run_cli(*command, "--workspace", str(not_a_folder))
    assert_clean_error(result, str(not_a_folder), "is a file")


async def test_model_that_cannot_load_is_reported(workspace, tmp_path):
    app = MlxDpoApp(workspace, model=str(tmp_path / "no-such-model"), settings=FAST)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model_state == "failed")
        assert "no-such-model" in errors(app)[0]
        await type_text(pilot, "hello")
        await pilot.press("ctrl+s")
        assert "Cannot sample" in errors(app)[-1]
        await pilot.press("f2")  # the rest of the app works
        await type_text(pilot, "still")
        await pilot.press("tab")
        await type_text(pilot, "works")
        await pilot.press("tab")
        await type_text(pilot, "fine")
        await pilot.press("ctrl+s")
        assert app.pair_counts[0] == 1


class HeldLoad(ModelWorker):
    """The real model worker, whose load waits until the test sets `release`: on any machine, however fast,
    the model is still loading for as long as the test needs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def _load(self):
        self.release.wait()
        return super()._load()


async def test_first_screen_is_drawn_while_the_model_loads(workspace):
    """The real default model, its load held by the test: the first screen is drawn, says the model is loading,
    and the app works meanwhile; once the load goes on, the status turns to "model ready" and a sample request
    made while loading is answered. (The times are measured by benchmarks/tui_latency.py.)"""
    app = MlxDpoApp(workspace, settings=SampleSettings(max_tokens=2), worker_factory=HeldLoad)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.first_screen_at is not None, what="the first screen")
            await wait_until(pilot, lambda: app.worker.alive, what="the model thread")  # started, and held
            screen = app.get_screen("label")
            status = str(screen.query_one("#model-text").render())
            assert app.model_state == "loading" and status.startswith(("finding", "loading", "converting")), status
            assert "SmolLM2-135M-Instruct" in status and screen.query_one("#model-progress").display
            # A keystroke reaches the prompt editor while the model loads.
            prompt = screen.query_one("#prompt")
            app.post_message(events.Key("H", "H"))
            await wait_until(pilot, lambda: prompt.text == "H", what="the keystroke in the editor")
            assert app.model_state == "loading"
            # More work while loading: another screen, a typed pair saved, then a sample request that waits.
            await send_keys(pilot, "f2")
            await wait_until(pilot, lambda: focused_id(app) == "write-prompt", what="the Write screen")
            await send_keys(pilot, "q", "tab")
            await wait_until(pilot, lambda: focused_id(app) == "write-chosen", what="focus on chosen")
            await send_keys(pilot, "a", "tab")
            await wait_until(pilot, lambda: focused_id(app) == "write-rejected", what="focus on rejected")
            await send_keys(pilot, "b", "ctrl+s")
            await wait_until(pilot, lambda: app.pair_counts[0] == 1, what="the typed pair")
            await send_keys(pilot, "f1")
            await wait_until(pilot, lambda: focused_id(app) == "prompt", what="the Label screen")
            await send_keys(pilot, "i", "ctrl+s")
            await wait_until(pilot, lambda: screen.request_id is not None, what="the sample request")
            assert app.model_state == "loading"
            assert "waiting for the model" in screen.query_one("#answer-1").border_subtitle
            app.worker.release.set()
            await wait_until(pilot, lambda: app.model_state == "ready", timeout=120, what="the default model")
            assert str(screen.query_one("#model-text").render()) == "● model ready: SmolLM2-135M-Instruct"
            assert not screen.query_one("#model-progress").display
            await wait_until(pilot, lambda: screen.state == "ready", timeout=60, what="the queued sample")
    finally:
        app.worker.release.set()  # never leave the model thread waiting


# --- durability -----------------------------------------------------------------------------------------------


def test_labels_acknowledged_as_saved_survive_sigkill(tiny, workspace, capsys):
    """A child runs the real app under Pilot and labels pairs with keys, printing "ack N ID" after each
    "saved" appears; after a few acks it is SIGKILLed mid-stride. Every acknowledged pair must be there."""
    wanted = 4
    child = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "tui_labeler.py"), str(workspace), str(tiny)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
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
        print(
            f"\n[tui] child process: first screen {first_screen:.0f} ms after the script started; "
            f"{len(acked)} acks, then SIGKILL; {len(pairs)} pairs intact"
        )
