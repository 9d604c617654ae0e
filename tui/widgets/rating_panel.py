"""G answers to one prompt (2 to 6), each rated by a person: the Label screen's rating mode (GRPO's groups).

Keys while it has focus: ↑/↓ (or k/j) choose an answer, 1-5 rate it, g marks it good (5) and b bad (1), + / -
change how many answers the next sample asks for, enter saves the group once every answer is rated. The panel
only holds and draws the answers and ratings; saving is the screen's (it posts `RatingPanel.Save`).
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from tui.widgets.answer_pane import visible

SIZES = (2, 6)  # answers a person rates together (mlx_dpo.data.rating_records.GROUP_SIZES)
GOOD, BAD = 5, 1  # what "good" and "bad" are stored as: the ends of the 1-5 scale


class RatingPanel(VerticalScroll):
    """The answers of one request, streamed in, with the person's rating of each."""

    can_focus = True
    BINDINGS = [
        *(
            Binding(
                str(n),
                f"rate({n})",
                f"rate {n}" if n in (1, 5) else "",
                show=n in (1, 5),
                tooltip=f"Rate the chosen answer {n} (1 worst, 5 best)",
            )
            for n in range(1, 6)
        ),
        Binding("g", f"rate({GOOD})", "good", tooltip="The chosen answer is good (rated 5)"),
        Binding("b", f"rate({BAD})", "bad", tooltip="The chosen answer is bad (rated 1)"),
        Binding("down,j", "move(1)", "next", show=False),
        Binding("up,k", "move(-1)", "previous", show=False),
        Binding("plus,+", "count(1)", "more", show=False, tooltip="Sample one more answer next time (at most 6)"),
        Binding("minus,-", "count(-1)", "fewer", show=False, tooltip="Sample one answer fewer next time (at least 2)"),
        Binding("enter", "save", "Save ratings", tooltip="Save the rated answers as a group (for GRPO rounds)"),
    ]

    class Save(Message):
        """The person asked to save the rated group."""

    def __init__(self, count: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.count = count  # answers the next sample asks for
        self.request_id: int | None = None
        self.answers: list[str] = []
        self.done: list[bool] = []
        self.ratings: list[int | None] = []
        self.selected = 0
        self.saved: str | None = None  # "group <key>" once saved

    def compose(self):
        yield Static("", id="rating-text", markup=False)

    # --- state ---

    def start(self, request_id: int) -> None:
        """A new request for `size` answers: nothing rated yet."""
        self.request_id, self.saved, self.selected = request_id, None, 0
        self.answers, self.done, self.ratings = [""] * self.count, [False] * self.count, [None] * self.count
        self.draw()

    @property
    def complete(self) -> bool:
        """Every answer is in and rated."""
        return bool(self.answers) and all(self.done) and all(r is not None for r in self.ratings)

    def chunk(self, slot: int, text: str) -> None:
        if 1 <= slot <= len(self.answers):
            self.answers[slot - 1] += text
            self.draw()

    def finish(self, slot: int, answer: str) -> None:
        """Answer `slot` is complete (an Answer: it knows whether it finished)."""
        if 1 <= slot <= len(self.answers):
            self.answers[slot - 1], self.done[slot - 1] = answer, True
            self.draw()

    # --- keys ---

    def action_rate(self, value: int) -> None:
        if not self.answers or self.saved:
            self.app.bell()
            return
        self.ratings[self.selected] = value
        if self.selected + 1 < len(self.answers):  # on to the next answer, as a person reads down the list
            self.selected += 1
        self.draw()

    def action_move(self, step: int) -> None:
        if self.answers:
            self.selected = (self.selected + step) % len(self.answers)
            self.draw()

    def action_count(self, step: int) -> None:
        self.count = max(SIZES[0], min(SIZES[1], self.count + step))
        self.draw()

    def action_save(self) -> None:
        self.post_message(self.Save())

    # --- drawing ---

    def draw(self) -> None:
        text = Text()
        if not self.answers:
            text.append(f"ctrl+s samples {self.count} answers to rate (+ / - to change) · m back to pairs", "dim")
        for i, (answer, done, rating) in enumerate(zip(self.answers, self.done, self.ratings)):
            mark = "▶ " if i == self.selected else "  "
            score = "·" if rating is None else str(rating)
            state = "" if done else " (streaming…)"
            state += "" if not done or getattr(answer, "finished", True) else " (cut at max tokens)"
            text.append(f"{mark}{i + 1} · rated {score}{state}\n", "bold reverse" if i == self.selected else "bold")
            text.append(visible(answer or "…") + "\n\n")
        if self.saved:
            text.append(f"saved {self.saved}: ctrl+s for the next sample", "green")
        self.query_one("#rating-text", Static).update(text)
