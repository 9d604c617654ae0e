"""Label: type (or queue) a prompt, sample two answers, pick the better one.

`screen.py` is the screen itself: keys, the worker's messages, drawing. The rules it follows are plain
classes that the tests can drive without a terminal: the sampling request in `tui.sampling`
(`SamplingState`, shared with the Compare screen), the prompt queue in `tui.prompts` (`PromptQueue`),
and, beside the screen, unjudged answers kept in the store (`candidates.py`), what undo brings
back (`history.py`), the queue's keys (`queue.py`, a mixin), marking one answer good or bad for KTO
(`feedback.py`), a conversation continued turn by turn (`conversation.py`, a mixin), the online loop's
parts: a program judge's suggestion and a prompt file given at start (`online.py`), and the rating mode
(`ratings.py`, key m: 2-6 answers rated 1-5 for GRPO rounds).
"""

from tui.screens.label.screen import LabelScreen

__all__ = ["LabelScreen"]
