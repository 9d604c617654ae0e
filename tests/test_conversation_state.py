"""The Label screen's conversation as plain Python (tui.conversation): which turn a prompt continues, stepping back
to branch and forward again, and what a saved or undone pick does to the thread. No terminal, no model."""

from __future__ import annotations

from helpers import assistant, system, user

from tui.conversation import Conversation, Turn
from tui.prompts import PromptParts

T1 = Turn(1, (system("Be brief."), user("Name a colour.")), "Blue.")


def turn_after(parent: Turn, pair_id: int, message: str, chosen: str) -> Turn:
    return Turn(pair_id, tuple(parent.history() + [user(message)]), chosen)


def test_continuing_puts_the_whole_conversation_before_an_empty_message_and_finds_the_turn_it_continues():
    c = Conversation()
    assert c.go_on() is None and c.back() is None  # nothing to continue yet
    c.labeled(T1, None)
    parts = c.go_on()
    assert parts == PromptParts("Be brief.", "", (user("Name a colour."), assistant("Blue.")))
    assert c.parent_for(PromptParts(parts.system, "Why?", parts.context).messages()) == 1
    assert c.parent_for([user("Something else")]) is None


def test_a_pick_after_stepping_back_branches_and_keeps_the_thread_up_to_its_parent():
    c = Conversation()
    c.labeled(T1, None)
    t2 = turn_after(T1, 2, "Why?", "The sky.")
    c.go_on()
    c.labeled(t2, 1)
    t3 = turn_after(t2, 3, "At night?", "Black.")
    c.go_on()
    c.labeled(t3, 2)
    assert [t.pair_id for t in c.path] == [1, 2, 3] and c.at == 2
    assert c.back().context == (user("Name a colour."), assistant("Blue."))  # now goes on from turn 1
    assert c.forward().context[-1] == assistant("The sky.") and c.forward() is not None and c.forward() is None
    c.back(), c.back(), c.back()
    branch = turn_after(T1, 4, "Another?", "Red.")
    assert c.parent_for(list(branch.prompt)) == 1
    c.labeled(branch, 1)
    assert [t.pair_id for t in c.path] == [1, 4] and c.at == 1


def test_undoing_a_pick_on_the_thread_drops_it_and_what_followed_it():
    c = Conversation()
    c.labeled(T1, None)
    t2 = turn_after(T1, 2, "Why?", "The sky.")
    c.labeled(t2, 1)
    assert not c.undone(99)
    assert c.undone(2) and [t.pair_id for t in c.path] == [1] and c.at == 1
    assert c.undone(1) and not c and c.at == 0
