"""The system-message line and the prompt editor, as the Label, Compare and Write screens and the pair
dialog show them, and their reading back as `PromptParts`.

Functions, not a widget: each screen yields the two fields into its own container, beside its own
buttons or answer editors, so the layout (and the CSS by id) stays the screen's.
"""

from __future__ import annotations

from collections.abc import Iterator

from textual.dom import DOMNode
from textual.widget import Widget
from textual.widgets import Input, TextArea

from tui.prompts import PromptParts

NO_PARTS = PromptParts()  # an empty prompt: the fields' default (immutable, so one instance serves)


def prompt_fields(
    system_id: str, prompt_id: str, placeholder: str = "", parts: PromptParts = NO_PARTS
) -> Iterator[Widget]:
    yield Input(parts.system, placeholder="system message (optional)", id=system_id, compact=True)
    prompt = TextArea(parts.user, id=prompt_id, placeholder=placeholder)
    prompt.border_title = "prompt"
    yield prompt


def read_prompt(node: DOMNode, system_id: str, prompt_id: str, context: tuple[dict, ...] = ()) -> PromptParts:
    """The prompt in the two fields below `node`; `context` are the earlier turns the fields do not show."""
    return PromptParts(
        node.query_one(f"#{system_id}", Input).value, node.query_one(f"#{prompt_id}", TextArea).text, context
    )
