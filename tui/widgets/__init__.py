"""Widgets the screens share, one module per feature; import them from here."""

from tui.widgets.answer_pane import AnswerPane, visible
from tui.widgets.conversation import ConversationView
from tui.widgets.mode_bar import ModeBar
from tui.widgets.model_status import ModelStatus
from tui.widgets.prompt_fields import prompt_fields, read_prompt
from tui.widgets.screen_button import ScreenButton
from tui.widgets.status_line import StatusLine

__all__ = [
    "AnswerPane",
    "ConversationView",
    "ModeBar",
    "ModelStatus",
    "ScreenButton",
    "StatusLine",
    "prompt_fields",
    "read_prompt",
    "visible",
]
