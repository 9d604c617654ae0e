"""The Label screen's rating mode (key m): sample 2 to 6 answers to the prompt and rate each, 1 to 5 or good/bad.

The rated answers are stored as a group (the store's ratings table, mlx_dpo.data.rating_records) with the version
that sampled them and the sampler; a GRPO round (`--method grpo`, or method "grpo" on the Train screen) trains
them, and the Data screen's ratings view shows and changes them. The answers are drawn by `RatingPanel`
(tui/widgets/rating_panel.py); this module connects it to the model worker and the store.
"""

from __future__ import annotations

from typing import Any

from mlx_dpo.api import Answer
from mlx_dpo.errors import MlxDpoError
from tui.prompts import PromptParts
from tui.screens.label import online
from tui.widgets.rating_panel import RatingPanel
from tui.workers.events import AnswerChunk, AnswerDone, SampleFailed


def panel(screen: Any) -> RatingPanel:
    return screen.query_one("#ratings", RatingPanel)


def active(screen: Any) -> bool:
    """The screen is in rating mode."""
    return panel(screen).display


def toggle(screen: Any) -> None:
    """Pairs <-> ratings: the two answer panes and their buttons, or the rating panel."""
    on = not active(screen)
    screen._clear_answers()
    panel(screen).display = on
    for part in ("#answers", "#label-buttons"):
        screen.query_one(part).display = not on
    panel(screen).draw()
    if on:
        panel(screen).focus()
    screen.show_status(
        "rating mode: ctrl+s samples answers; 1-5 or g/b rate; enter saves; m back to pairs"
        if on
        else "pair mode: ctrl+s samples two answers"
    )


def sample(screen: Any, parts: PromptParts) -> None:
    """Ask the model worker for the panel's number of answers to `parts`."""
    screen._clear_answers()
    screen.rating_prompt = parts
    screen.rating_version = online.known_version(screen.app.current_version_label())
    request = screen.app.worker.sample(parts.messages(), screen.settings, count=panel(screen).count)
    panel(screen).start(request)
    panel(screen).focus()
    screen.show_status(f"sampling {panel(screen).count} answers…")


def take(screen: Any, message: Any) -> bool:
    """Draw a worker event (a WorkerEvent message) of the rating panel's request, the message stopped there; False for
    any other event (the pair mode's)."""
    event = message.event
    if not active(screen) or getattr(event, "request_id", None) != panel(screen).request_id:
        return False
    message.stop()
    match event:
        case AnswerChunk(slot=slot, text=text):
            panel(screen).chunk(slot, text)
        case AnswerDone(slot=slot, text=text, finished=finished):
            panel(screen).finish(slot, Answer(text, finished))
            if all(panel(screen).done):
                screen.show_status("rate each answer: ↑/↓ choose · 1-5 rate · g good · b bad · enter saves")
        case SampleFailed(error=error):
            screen.app.notify_error(f"Sampling failed: {error}")
    return True


def save(screen: Any) -> None:
    """Store the rated answers as a group, once every answer is in and rated."""
    rated = panel(screen)
    if rated.saved:
        screen.app.notify_warning(f"Already saved ({rated.saved}): ctrl+s samples the next answers.")
        return
    if not rated.complete:
        screen.app.notify_warning("Rate every answer first (1-5, g good, b bad), once all are in.")
        return
    try:
        group = screen.store.ratings.add_group(
            screen.rating_prompt.messages(),
            rated.answers,
            rated.ratings,
            rater="human",
            version=screen.rating_version,
            sampler=screen.sampler,
        )
    except MlxDpoError as e:
        screen.app.notify_error(str(e), title="Not saved")
        return
    rated.saved = f"{len(group.ratings)} ratings"
    rated.draw()
    screen.show_status(f"saved {len(group.ratings)} ratings (for GRPO rounds)", "saved")
    screen.app.notify(f"saved {len(group.ratings)} ratings", title="Saved", timeout=2)
    screen.app.store_changed()
