"""The Label screen in the online loop: a program judge's suggestion, and a prompt file worked through.

A suggestion. With a program judge (`MlxDpoApp(judge=SPEC)`), answers that are complete and not judged are
sent to the judge worker (`tui.workers.judge`) as shown, pane 1 then pane 2. Its verdict is shown only
while the same answers are on screen ("judge prefers answer 2 · a accept"), and `a` saves exactly what
it said: a pair, or a tie. The person decides, so the label is theirs (no judge recorded) with a note
naming the judge that suggested it; the judge's own labels come from `mlx-dpo online`, not from here.

A prompt file given at start (`MlxDpoApp(prompts=FILE)`, as `mlx-dpo online --judge human` does) is the
queue, and a restarted app goes on at its first prompt that the store holds no label for.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from mlx_dpo.api import check_provenance
from mlx_dpo.errors import MlxDpoError
from tui.workers.events import Suggestion

PANE_NAMES = {1: "answer 1", 2: "answer 2"}


def _line(screen: Any) -> Static:
    return screen.query_one("#suggestion", Static)


def _say(screen: Any, text: str) -> None:
    line = _line(screen)
    line.update(Text(text))
    line.display = bool(text)


def ask(screen: Any) -> None:
    """Shown answers are complete: ask the judge about them (if there is a judge and it is loaded)."""
    screen.suggestion = None
    judge = screen.app.judge
    if judge is None or screen.state != "ready" or screen.sampling.identical:
        _say(screen, "")
        return
    if screen.app.judge_name is None:
        _say(screen, "judge loading…")
        return  # asked again when it is ready (`LabelScreen.judge_ready`)
    judge.suggest(screen.sampling.prompt.messages(), screen.answers())
    _say(screen, f"judge {screen.app.judge_name}: thinking…")


def forget(screen: Any) -> None:
    screen.suggestion = None
    if screen.is_mounted:
        _say(screen, "")


def received(screen: Any, event: Suggestion) -> None:
    """The judge's verdict; dropped when other answers are on screen by now."""
    if screen.state != "ready" or tuple(event.answers) != screen.answers():
        return
    screen.suggestion = event
    if event.choice in (1, 2):
        text = f"judge {event.judge} prefers {PANE_NAMES[event.choice]} · a accept"
    elif event.choice == 0:
        text = f"judge {event.judge}: a tie · a accept"
    else:
        text = f"judge {event.judge} gives no choice" + (f" ({event.note})" if event.note else "")
    _say(screen, text)


def accept(screen: Any) -> None:
    """`a`: save the judge's choice for the shown answers."""
    event = screen.suggestion
    if event is None or screen.state != "ready" or tuple(event.answers) != screen.answers():
        if screen.app.judge is None:
            screen.app.notify_warning("No judge suggests anything: start the app with --judge SPEC.")
        else:
            screen.app.notify_warning("No suggestion for these answers (yet).")
        return
    note = f"suggested by the judge {event.judge}"
    if event.choice in (1, 2):
        screen.save_pick(event.choice, note=note)
    elif event.choice == 0:
        screen.action_tie()
    else:
        screen.app.notify_warning(f"The judge {event.judge} made no choice here: pick with 1 / 2, or t.")


def known_version(label: str) -> str | None:
    """The version label the store records for sampled answers ("base", "v3"), or None for one it does not
    know (an adapter opened with --adapter-path from elsewhere)."""
    try:
        check_provenance(None, label, None)
    except MlxDpoError:
        return None
    return label


def _judged_prompts(store) -> list[list[dict]]:
    return [p.prompt for p in store.list_pairs()] + [s.prompt for s in store.list_skips()]


def open_initial_queue(screen: Any) -> None:
    """The app was given a prompt file: it is the queue, from its first prompt with no label in the store;
    answers brought back from the last session keep their place in it."""
    queue = screen.app.initial_queue
    if queue is None:
        return
    screen.queue = queue
    if screen.state == "ready":  # restored answers: the queue stands at their prompt, if it is one of them
        shown = screen.sampling.prompt.messages()
        queue.pos = next((i for i, p in enumerate(queue.prompts) if p == shown), None)
        screen._show_queue()
        return
    judged = _judged_prompts(screen.store)
    start = next((i for i, p in enumerate(queue.prompts) if p not in judged), None)
    if start is None:
        screen.app.notify(f"Every prompt of {queue.name} has a label already.", timeout=6)
        queue.pos = len(queue) - 1
        screen._show_queue()
        return
    if start:
        screen.app.notify(f"{queue.name}: {start} prompts have labels; going on at prompt {start + 1}", timeout=4)
    screen._load_queued(start)
