"""Marking one sampled answer good or bad (keys g / b on the Label screen): a label for KTO.

Often a labeler can say "this answer is bad" without having a better one, and the single answer the
model gives is what they want to judge. The mark goes to the store's feedback table
(mlx_dpo.data.feedback_records) at once; a KTO round trains it. The answer judged is answer 1, the
model's first sample; the shown answers then count as labeled, as after a pair.
"""

from __future__ import annotations

from typing import Any

from mlx_dpo.errors import MlxDpoError


def mark_answer(screen: Any, desirable: bool) -> None:
    """Store answer 1 of the Label screen as good (`desirable`) or bad, then move on as a label does."""
    if not screen._can_label():
        return
    word = "good" if desirable else "bad"
    try:
        saved = screen.store.add_feedback(
            screen.sampling.prompt.messages(), screen.answers()[0], desirable, sampler=screen.sampler
        )
    except MlxDpoError as e:
        screen.app.notify_error(str(e), title="Not saved")
        return
    screen.candidate.drop()  # judged: a restart must not bring these answers back
    screen.sampling.judge(f"answer 1 marked {word}")
    screen.show_status(f"saved: answer 1 marked {word} (label #{saved.id}, for KTO)", "saved")
    screen.app.notify(f"answer 1 marked {word}", title="Saved", timeout=2)
    screen.app.store_changed()
    screen._advance_queue()
