"""A conversation on the Label screen, driven with keys through Pilot against the real store and a tiny real model:
pick, continue with the chosen answer, step back and branch, undo a turn; stored as a tree of pairs whose prompts
grow, exported as TRL's conversational rows, imported back as the same threads, and trained."""

from __future__ import annotations

import json

import pytest
from helpers import sample_answers, thread_shapes, wait_until, warnings
from test_tui import make_app, started  # noqa: F401  (the fixture and the app runner)

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.training import rounds

pytestmark = pytest.mark.anyio

ROUND = dict(iters=2, batch_size=2, lora_rank=4, seed=1)


async def pick(pilot, slot: str) -> int:
    screen = pilot.app.get_screen("label")
    before = pilot.app.pair_counts[0]
    await pilot.press("escape", slot)
    await wait_until(pilot, lambda: pilot.app.pair_counts[0] == before + 1, what="the pair saved")
    return int(screen.status_text.split("#")[1].split()[0])


async def next_turn(pilot, key: str, message: str) -> None:
    """`key` moves to the turn to go on from (c: after the last pick; [ / ]: step), then a message and two answers."""
    screen = pilot.app.get_screen("label")
    await pilot.press(key)
    assert pilot.app.focused.id == "prompt" and screen.query_one("#prompt").text == ""
    await sample_answers(pilot, message)


async def test_a_three_turn_conversation_with_a_branch_is_four_pairs_that_export_reimport_and_train(
    make_app, workspace, tmp_path, tiny
):
    app = make_app()
    async with started(app) as pilot:
        screen = app.get_screen("label")
        thread = screen.query_one("#thread")
        assert not thread.display  # a single question looks as it always did
        await pilot.press("escape", "c")  # (in the prompt editor, keys are text)
        assert any("Pick the better answer first" in w for w in warnings(app))
        await pilot.press("p")
        await sample_answers(pilot, "Name a colour.")
        first = await pick(pilot, "1")
        assert "c continue the conversation" in screen.status_text and thread.display
        await next_turn(pilot, "c", "Why that one?")
        assert screen.query_one("#prompt").border_title == "prompt (after 2 earlier turns)"
        second = await pick(pilot, "2")
        await next_turn(pilot, "c", "And at night?")
        third = await pick(pilot, "1")
        # Step back: the next message goes on from the first turn, a branch beside the second.
        await next_turn(pilot, "left_square_bracket", "Another one?")
        assert "▸ the next message continues turn 1" in thread.text
        branch = await pick(pilot, "1")
        # Undo the branch's pick: it leaves the store and the thread, its answers come back to be picked again.
        await pilot.press("u")
        assert app.pair_counts[0] == 3 and screen.state == "ready"
        assert [t.pair_id for t in screen.conversation.path] == [first]
        branch = await pick(pilot, "1")
        assert [t.pair_id for t in screen.conversation.path] == [first, branch]
        # ] steps forward along the thread on screen; n starts a new conversation.
        await pilot.press("escape", "right_square_bracket")
        assert "▸ the next message continues turn 2" in thread.text
        await pilot.press("escape", "n")
        assert not thread.display and not screen.conversation
        # The Data screen shows the conversation as a thread: depth first, each turn under the one it continues.
        await pilot.press("f3")
        await wait_until(pilot, lambda: app.current_mode == "data")
        app.screen.query_one("#split-filter").value = "threads"
        await wait_until(pilot, lambda: app.screen.pair_ids == [first, second, third, branch], what="the thread")
        assert app.screen.query_one("#data-status").text == "1 conversation, 4 labelled turns"
        cells = [str(app.screen.query_one("#pairs").get_cell(str(i), "prompt")) for i in app.screen.pair_ids]
        assert cells == ["1 Name a colour.", "└2 Why that one?", " └3 And at night?", "└2 Another one?"]

    with PreferenceStore(workspace) as store:
        pairs = {p.id: p for p in store.list_pairs()}
        assert sorted(pairs) == sorted([first, second, third, branch])
        assert store.threads.links() == {second: first, third: second, branch: first}
        # Each prompt is the whole conversation so far: the earlier one's prompt, its chosen answer, a message.
        for child, parent in store.threads.links().items():
            p, c = pairs[parent], pairs[child]
            assert c.prompt[: len(p.prompt) + 1] == p.prompt + [{"role": "assistant", "content": p.chosen}]
        assert [len(pairs[i].prompt) for i in (first, second, third, branch)] == [1, 3, 5, 3]
        exported = tmp_path / "conversation.jsonl"
        assert store.export_jsonl(exported) == 4
        shapes = thread_shapes(store)
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert all(isinstance(r["prompt"], list) and r["chosen"][0]["role"] == "assistant" for r in rows)

    other = tmp_path / "elsewhere"
    with PreferenceStore(other) as store:
        assert store.import_jsonl(exported).linked == 3
        assert thread_shapes(store) == shapes
    result = rounds.run_round(other, model=str(tiny), settings=ROUND)
    assert result.status == "finished"
    with PreferenceStore(other) as store:
        assert len(store.trained_pairs()) == 4 and not store.untrained_pairs()
