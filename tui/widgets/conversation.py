"""The conversation on the Label screen as a thread: each labelled turn's user message and chosen answer, and where
the next message goes on from. Hidden while there is no conversation, so a single question looks as it always did.

It draws a `tui.conversation.Conversation` (the rules live there); the screen calls `show` after each change.
"""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.conversation import Conversation
from tui.prompts import snippet
from tui.widgets.answer_pane import visible

KEYS = "c continue · [ back a turn (branch) · ] forward · u undo the last turn · n new conversation"


def thread_text(conversation: Conversation, width: int = 100) -> Text:
    """The thread, one line per message: turns after the branch point dimmed (stepped back over)."""
    text = Text()
    path = conversation.path
    system = next((m["content"] for m in path[0].prompt if m["role"] == "system"), "") if path else ""
    if system:
        text.append(f"system: {snippet(visible(system), width)}\n", style="italic")
    for number, turn in enumerate(path, start=1):
        style = "dim" if number > conversation.at else ""
        text.append(f"{number} you: ", style=f"bold {style}")
        text.append(snippet(visible(turn.prompt[-1]["content"]), width) + "\n", style=style)
        text.append(f"  assistant (pair #{turn.pair_id}): ", style=f"bold {style}")
        text.append(snippet(visible(str(turn.chosen)), width) + "\n", style=style)
        if number == conversation.at:
            text.append(f"▸ the next message continues turn {number}\n", style="bold")
    if conversation.at == 0:
        text.append("▸ the next message starts the conversation again (a branch at turn 1)\n", style="bold")
    return text


class ConversationView(VerticalScroll):
    DEFAULT_CSS = """
    ConversationView {
        height: auto;
        max-height: 9;
        margin: 0 1;
        border: round $primary-darken-2;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.text = ""  # what is shown, for the tests
        self.display = False

    def compose(self):
        yield Static("", markup=False)

    def show(self, conversation: Conversation) -> None:
        self.display = bool(conversation)
        if not conversation:
            self.text = ""
            return
        rendered = thread_text(conversation)
        self.text = rendered.plain
        self.query_one(Static).update(rendered)
        self.border_title = f"conversation · {len(conversation.path)} turn{'s' * (len(conversation.path) != 1)}"
        self.border_subtitle = KEYS
        self.scroll_end(animate=False)
