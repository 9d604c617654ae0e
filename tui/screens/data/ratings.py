"""The Data screen's ratings view (key g): a person's rated answers, one row each, grouped by prompt.

Keys: 1-5 change the selected answer's rating (committed at once), l adds every group as DPO's pair (best against
worst) and KTO's answers marked good or bad at the good-rating threshold (mlx_dpo.data.rating_labels), escape closes.
A judge's rewards from online GRPO rounds are not a person's to change, so only a person's are listed.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from mlx_dpo.api import GroupSettings, add_rating_labels
from mlx_dpo.errors import MlxDpoError
from tui.prompts import prompt_snippet, snippet

COLUMNS = (("id", 5), ("group", 6), ("rating", 6), ("version", 7), ("trained", 7), ("prompt", 26), ("answer", 50))


class RatingsModal(ModalScreen):
    BINDINGS = [
        *(Binding(str(n), f"rate({n})", "", show=False) for n in range(1, 6)),
        Binding("l", "labels", "As pairs and KTO labels"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self, store, good_rating: int = GroupSettings.good_rating) -> None:
        super().__init__(classes="ratings-modal")
        self.store, self.good_rating = store, good_rating

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box wide"):
            yield Static(
                Text(
                    "your ratings · 1-5 change the selected one · l: add them as DPO pairs (best against "
                    f"worst) and KTO labels (good from {self.good_rating}) · escape closes"
                ),
                classes="modal-title",
            )
            table = DataTable(id="ratings-table", cursor_type="row")
            for name, width in COLUMNS:
                table.add_column(name, width=width, key=name)
            yield table
            yield Static("", id="ratings-status", classes="modal-hint")

    def on_mount(self) -> None:
        self.refresh_rows()
        self.query_one(DataTable).focus()

    def refresh_rows(self) -> None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        groups = self.store.ratings.groups(rater="human")
        untrained = {r.id for g in self.store.ratings.untrained() for r in g.ratings}
        for number, group in enumerate(groups, start=1):
            for r in group.ratings:
                table.add_row(
                    str(r.id),
                    str(number),
                    f"{r.reward:g}",
                    r.version or "?",
                    "no" if r.id in untrained else "yes",
                    prompt_snippet(group.prompt, 26),
                    snippet(r.answer, 50),
                    key=str(r.id),
                )
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))
        self._status(f"{table.row_count} rated answer(s) in {len(groups)} group(s)")

    def _status(self, text: str) -> None:
        self.query_one("#ratings-status", Static).update(Text(text))

    def action_rate(self, value: int) -> None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        rating_id = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        try:
            self.store.ratings.rate(rating_id, value)
        except MlxDpoError as e:
            self._status(str(e))
            return
        self.refresh_rows()
        self._status(f"rating {rating_id} is now {value}")

    def action_labels(self) -> None:
        try:
            pairs, marked = add_rating_labels(self.store, self.good_rating)
        except MlxDpoError as e:
            self._status(str(e))
            return
        self._status(
            f"added {pairs.added} pair(s) and {marked.added} answer(s) marked good or bad "
            f"({pairs.duplicates + marked.duplicates} already there)"
        )
        self.app.store_changed()

    def action_close(self) -> None:
        self.dismiss(None)
