"""The Label screen's conversation: `c` continue after a pick, `[` / `]` step back and forward along the thread
(write a message there to branch), and the hooks the screen calls when a pick is saved or undone.

A mixin of `LabelScreen`, as `queue.py` is. The rules (which turn a prompt continues, what stepping does) are
`tui.conversation.Conversation`'s; the thread is drawn by `tui.widgets.ConversationView`. The next turn's two
answers are sampled like any prompt's: the whole conversation, rendered by the model's chat template, the one
training encodes (tests/test_conversation_logprobs.py).
"""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import TextArea

from mlx_dpo.errors import MlxDpoError
from tui.conversation import Conversation, Turn
from tui.prompts import PromptParts
from tui.widgets import ConversationView

# Not in the footer (it is full): the thread's own border lists them, and the status line says `c` after a pick.
CONVERSATION_BINDINGS = [
    Binding(
        "c",
        "continue_conversation",
        "Continue",
        show=False,
        tooltip="Continue the conversation: the chosen answer becomes the assistant's turn",
    ),
    Binding(
        "left_square_bracket",
        "turn_back",
        "Back a turn",
        show=False,
        tooltip="Step back a turn of the conversation (write a message there to branch)",
    ),
    Binding(
        "right_square_bracket",
        "turn_forward",
        "Forward a turn",
        show=False,
        tooltip="Step forward a turn of the conversation",
    ),
]


class ConversationActions:
    conversation: Conversation

    def _thread(self) -> ConversationView:
        return self.query_one("#thread", ConversationView)

    def _show_thread(self) -> None:
        self._thread().show(self.conversation)

    def continues(self, messages: list[dict]) -> int | None:
        """The pair a pick on `messages` continues: a turn of the thread on screen, else a stored turn whose
        history they share (a queued or restored conversation)."""
        parent = self.conversation.parent_for(messages)
        if parent is None and any(m["role"] == "assistant" for m in messages):
            try:
                parent = self.store.threads.parent_of(messages)
            except MlxDpoError:
                return None
        return parent

    def conversation_labeled(self, pair, parent_id: int | None) -> None:
        """A pick was saved as `pair` (continuing `parent_id`): the thread grows (or branches) by it. A prompt queue
        that moved on to its next prompt (the screen no longer shows the judged answers) ends the conversation."""
        if self.sampling.judged is None:
            self.conversation.clear()
            self._show_thread()
            return
        self.conversation.labeled(Turn(pair.id, tuple(pair.prompt), pair.chosen), parent_id)
        self._show_thread()
        self.show_status(f"{self.status_text} · c continue the conversation", "saved")

    def conversation_undone(self, pair_id: int) -> None:
        if self.conversation.undone(pair_id):
            self._show_thread()

    def action_continue_conversation(self) -> None:
        if not self.conversation or self.state not in ("labeled", "idle", "failed"):
            self.app.notify_warning("Pick the better answer first: c then continues the conversation with it.")
            return
        self._go_to(self.conversation.go_on(), "write the next message, then ctrl+s for two answers to it")

    def action_turn_back(self) -> None:
        if not self.conversation:
            self.app.notify_warning("No conversation yet: pick an answer, then c continues it.")
            return
        self._go_to(self.conversation.back(), "stepped back: a message written here branches the conversation")

    def action_turn_forward(self) -> None:
        if not self.conversation:
            self.app.notify_warning("No conversation yet: pick an answer, then c continues it.")
            return
        self._go_to(self.conversation.forward(), "stepped forward")

    def _go_to(self, parts: PromptParts | None, hint: str) -> None:
        if parts is None:
            self.app.notify_warning("No turn further that way.")
            return
        self._clear_answers()
        self._set_editor(parts)
        self._show_thread()
        self.show_status(hint)
        self.query_one("#prompt", TextArea).focus()

    def action_next(self) -> None:
        """A new prompt (`n`) is a new conversation."""
        self.conversation.clear()
        self._show_thread()
        super().action_next()
