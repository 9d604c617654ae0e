"""Data: every stored pair in a table; search, views, view/edit, delete, swap, overrule, move, import, export.

The "judge" column says who chose each pair: a person, or the program judge of an online run (`o`
overrules it: the pair is swapped and becomes the person's, the judge kept as overruled). The views: all
pairs, one split, the pairs a program judged, conversations as threads (`threads.py`), and "review" (`r`):
the pairs the latest trained version disagrees with most, worst first, with contradictions flagged
(`review.py`); the review runs on the app's model thread and comes back as a `WorkerEvent`.

Single-row changes run on the event loop (each is one small committed transaction); importing and
exporting files run in thread workers (`files.py`, a mixin; the store is thread-safe) and report back when done.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Select

from mlx_dpo.api import HUMAN_JUDGE, StoredPair
from mlx_dpo.errors import MlxDpoError
from tui.messages import WorkerEvent
from tui.modals import ConfirmModal, PairEdits, PairModal
from tui.prompts import age, prompt_snippet, snippet
from tui.screens.data.files import FileActions
from tui.screens.data.ratings import RatingsModal
from tui.screens.data.review import ReviewList
from tui.screens.data.threads import summary, threaded
from tui.widgets import ModeBar, ScreenButton, StatusLine
from tui.workers.events import ReviewDone, ReviewFailed

COLUMNS = (
    ("id", 5),
    ("split", 6),
    ("origin", 8),
    ("judge", 14),
    ("prompt", 23),
    ("chosen", 20),
    ("rejected", 19),
    ("updated", 7),
)
REVIEW_COLUMNS = (
    ("id", 5),
    ("split", 6),
    ("margin", 7),
    ("flag", 8),
    ("judge", 14),
    ("prompt", 23),
    ("chosen", 19),
    ("rejected", 18),
)
# The views (`f` cycles through the first four; `r` opens the review, which needs the model).
SPLIT_FILTERS = [
    ("all splits", "all"),
    ("train", "train"),
    ("valid", "valid"),
    ("judged", "judged"),
    ("conversations", "threads"),
    ("review", "review"),
]
CYCLED = ("all", "train", "valid", "judged")


def short_judge(name: str) -> str:
    """A judge's name as a narrow column shows it: its kind and the callable's (or the model's) own name,
    "score:one_sentence" for "score:mlx_dpo.online.demo_judges:one_sentence"."""
    kind, _, spec = name.partition(":")
    if not spec:
        return name
    return f"{kind}:{Path(spec).name if kind == 'llm' else spec.rsplit(':', 1)[-1]}"


def judge_text(pair: StoredPair) -> str:
    """Who chose: the program judge, a person, or (imported, no judge recorded) nobody known."""
    if pair.judge is not None:
        return short_judge(pair.judge)
    if pair.overruled:
        return f"{HUMAN_JUDGE} (overruled {short_judge(pair.overruled)})"
    return "" if pair.origin == "imported" else HUMAN_JUDGE


class DataScreen(FileActions, Screen):
    BINDINGS = [
        Binding("enter", "open_pair", "View/edit", show=False, tooltip="View or edit the selected pair"),
        Binding("delete", "delete_pair", "Delete", tooltip="Delete the selected pair"),
        Binding("s", "swap", "Swap", tooltip="Swap chosen and rejected of the selected pair"),
        Binding("o", "overrule", "Overrule", tooltip="Overrule the program judge of the selected pair (swap it)"),
        Binding("r", "review", "Review", tooltip="Review: the pairs the trained model disagrees with most"),
        Binding("v", "toggle_split", "Train/valid", tooltip="Move the selected pair between train and valid"),
        Binding("f", "cycle_filter", "Filter", tooltip="Show all / train / valid / program-judged pairs"),
        Binding("slash", "focus_search", "Search", tooltip="Search prompts, answers and notes"),
        Binding("i", "import_pairs", "Import", tooltip="Import pairs from a JSONL file"),
        Binding("x", "export_pairs", "Export", tooltip="Export pairs to a JSONL file"),
        Binding("g", "ratings", "Ratings", tooltip="Your ratings (the Label screen's rating mode): review, change"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="data-screen")
        self.pair_ids: list[int] = []
        self.review: ReviewList | None = None  # the last review's rows
        self.review_request: int | None = None  # the review being run on the model thread
        self.review_columns = False  # the table has REVIEW_COLUMNS

    def compose(self) -> ComposeResult:
        yield ModeBar("data")
        with Horizontal(id="data-filters"):
            yield Input(placeholder="search prompts, answers and notes  ( / )", id="search", compact=True)
            yield Select(SPLIT_FILTERS, value="all", allow_blank=False, id="split-filter", compact=True)
        table = DataTable(id="pairs", cursor_type="row", zebra_stripes=True)
        yield table
        with Horizontal(id="data-buttons"):
            yield ScreenButton("enter view/edit", "open_pair", id="data-open")
            yield ScreenButton("del delete", "delete_pair", id="data-delete", variant="error")
            yield ScreenButton("s swap", "swap", id="data-swap")
            yield ScreenButton("o overrule", "overrule", id="data-overrule")
            yield ScreenButton("r review", "review", id="data-review")
            yield ScreenButton("v train/valid", "toggle_split", id="data-split")
            yield ScreenButton("i import", "import_pairs", id="data-import")
            yield ScreenButton("x export", "export_pairs", id="data-export")
            yield StatusLine(id="data-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#pairs", DataTable)
        self._columns(review=False)
        self.reload()
        table.focus()

    def _columns(self, review: bool) -> None:
        table = self.query_one("#pairs", DataTable)
        table.clear(columns=True)
        for name, width in REVIEW_COLUMNS if review else COLUMNS:
            table.add_column(name, width=width, key=name)
        self.review_columns = review

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.reload()

    # --- the table ---

    @property
    def view(self) -> str:
        value = self.query_one("#split-filter", Select).value
        return "all" if value == Select.BLANK else str(value)

    @property
    def split_filter(self) -> str | None:
        return self.view if self.view in ("train", "valid") else None

    def reload(self, keep: int | None = None) -> None:
        """Refill the table from the store; keep the cursor on pair `keep` (or the current one) if still shown."""
        table = self.query_one("#pairs", DataTable)
        if keep is None:
            keep = self.current_id()
        search = self.query_one("#search", Input).value
        try:
            pairs = self.app.store.list_pairs(search=search or None, split=self.split_filter)
            total = self.app.store.count_pairs()
        except MlxDpoError as e:
            self.app.notify_error(str(e), title="Cannot read the store")
            return
        review = self.view == "review"
        if review != self.review_columns:
            self._columns(review)
        table.clear()
        if review:
            self._review_rows(table, {p.id: p for p in pairs})
        else:
            if self.view == "judged":
                pairs = [p for p in pairs if p.judge is not None or p.overruled]
            prompts: dict[int, str] = {}
            if self.view == "threads":  # conversations as threads (threads.py)
                trees = self.app.store.threads.trees()
                pairs, prompts = threaded(trees, pairs)
            for p in pairs:
                table.add_row(
                    str(p.id), p.split, p.origin, *self._cells(p, prompts.get(p.id)), age(p.updated_at), key=str(p.id)
                )
            self.pair_ids = [p.id for p in pairs]
            plural = "s" * (total != 1)
            filtered = search or self.view != "all"
            shown = f"{len(pairs)} of {total} pair{plural}" if filtered else f"{total} pair{plural}"
            self.query_one(StatusLine).show(summary(trees, pairs) if self.view == "threads" else shown)
        if keep in self.pair_ids:
            table.move_cursor(row=self.pair_ids.index(keep), animate=False)

    @staticmethod
    def _cells(p: StoredPair, prompt: str | None = None) -> tuple:
        return (
            Text(snippet(judge_text(p), 60)),
            Text(prompt or prompt_snippet(p.prompt, 60)),
            Text(snippet(p.chosen, 50)),
            Text(snippet(p.rejected, 50)),
        )

    def _review_rows(self, table: DataTable, pairs: dict[int, StoredPair]) -> None:
        """The review view: the last review's rows still in the store (and matching the search), worst first."""
        self.pair_ids = []
        status = self.query_one(StatusLine)
        if self.review is None:
            status.show(
                "reviewing with the latest trained version…"
                if self.review_request is not None
                else "r: review the pairs with the latest trained version"
            )
            return
        flags = self.review.flags()
        for row in self.review.rows:
            p = pairs.get(row.pair_id)
            if p is None:
                continue
            flag = {"reversed": "⚠ both", "cycle": "⚠ cycle"}.get(flags.get(p.id, ""), row.state)
            table.add_row(str(p.id), p.split, self.review.margin_text(row), flag, *self._cells(p), key=str(p.id))
            self.pair_ids.append(p.id)
        status.show(self.review.summary())

    def current_id(self) -> int | None:
        table = self.query_one("#pairs", DataTable)
        if not self.pair_ids or table.cursor_row is None or not 0 <= table.cursor_row < len(self.pair_ids):
            return None
        return self.pair_ids[table.cursor_row]

    def _selected(self) -> int | None:
        pair_id = self.current_id()
        if pair_id is None:
            self.app.notify_warning("No pair selected: the table is empty.")
        return pair_id

    def _selected_pair(self) -> StoredPair | None:
        """The selected pair from the store, or None (with a message if it vanished meanwhile)."""
        pair_id = self._selected()
        if pair_id is None:
            return None
        try:
            return self.app.store.get_pair(pair_id)
        except MlxDpoError as e:
            self.app.notify_error(str(e))
            self.reload()
            return None

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        self.reload()

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.query_one("#pairs", DataTable).focus()

    @on(Select.Changed, "#split-filter")
    def _filter_changed(self) -> None:
        if self.view == "review" and self.review is None and self.review_request is None:
            self._start_review()
        self.reload()

    def action_cycle_filter(self) -> None:
        select = self.query_one("#split-filter", Select)
        select.value = CYCLED[(CYCLED.index(select.value) + 1) % len(CYCLED)] if select.value in CYCLED else "all"

    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one("#pairs", DataTable).focus()

    # --- one pair ---

    @on(DataTable.RowSelected, "#pairs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_pair()

    def _change(self, change: Callable[[], str], failed: str, keep: int | None) -> None:
        """One committed store change (`change()` returns what to tell the user); then the table is reloaded
        with the cursor on pair `keep`."""
        try:
            notice = change()
            if self.review is not None:  # contradictions need no model: found again at once
                self.review.recheck(self.app.store.list_pairs())
        except MlxDpoError as e:
            self.app.notify_error(str(e), title=failed)
            return
        self.app.notify(notice, timeout=2)
        self.app.store_changed()
        self.reload(keep=keep)

    def action_open_pair(self) -> None:
        pair = self._selected_pair()
        if pair is None:
            return
        pair_id = pair.id

        def edited(edits: PairEdits | None) -> None:
            self.action_focus_table()
            if edits is not None:
                self._change(lambda: self._save(pair_id, edits), "Not saved", keep=pair_id)

        self.app.push_screen(PairModal(pair), edited)

    def _save(self, pair_id: int, edits: PairEdits) -> str:
        self.app.store.update_pair(
            pair_id, prompt=edits.prompt, chosen=edits.chosen, rejected=edits.rejected, note=edits.note
        )
        if self.review is not None:
            self.review.edited(pair_id)
        return f"saved pair #{pair_id}"

    def action_delete_pair(self) -> None:
        pair = self._selected_pair()
        if pair is None:
            return
        pair_id = pair.id
        question = f"Delete pair #{pair_id}?\n\n{prompt_snippet(pair.prompt, 70)}\n\nThis cannot be undone."

        def confirmed(yes: bool | None) -> None:
            self.action_focus_table()
            if not yes:
                return
            index = self.pair_ids.index(pair_id) if pair_id in self.pair_ids else 0
            remaining = [i for i in self.pair_ids if i != pair_id]  # the cursor stays at the same row
            self._change(
                lambda: self._delete(pair_id),
                "Not deleted",
                keep=remaining[min(index, len(remaining) - 1)] if remaining else None,
            )

        self.app.push_screen(ConfirmModal(question, yes="Delete"), confirmed)

    def _delete(self, pair_id: int) -> str:
        self.app.store.delete_pair(pair_id)
        if self.review is not None:
            self.review.deleted(pair_id)
        return f"deleted pair #{pair_id}"

    def action_swap(self) -> None:
        pair_id = self._selected()
        if pair_id is not None:
            self._change(lambda: self._swap(pair_id), "Not swapped", keep=pair_id)

    def _swap(self, pair_id: int) -> str:
        self.app.store.swap_pair(pair_id)
        if self.review is not None:
            self.review.swapped(pair_id)
        return f"pair #{pair_id}: chosen and rejected swapped"

    def action_overrule(self) -> None:
        pair = self._selected_pair()
        if pair is None:
            return
        if pair.judge is None:
            self.app.notify_warning(
                f"Pair #{pair.id} was not chosen by a program judge: nothing to overrule (s swaps it)."
            )
            return
        pair_id = pair.id
        self._change(lambda: self._overrule(pair_id), "Not overruled", keep=pair_id)

    def _overrule(self, pair_id: int) -> str:
        pair = self.app.store.overrule(pair_id)
        if self.review is not None:
            self.review.swapped(pair_id)  # an overrule swaps the answers, so their rewards too
        return f"pair #{pair_id}: {pair.overruled} overruled, chosen and rejected swapped"

    def action_ratings(self) -> None:
        """A person's ratings (ratings.py), to review and change; the good-rating threshold is the app's."""
        good = self.app.train_settings.get("good_rating")
        self.app.push_screen(
            RatingsModal(self.app.store, **({"good_rating": good} if good else {})), lambda _: self.reload()
        )

    # --- the review view ---

    def action_review(self) -> None:
        """Run a review now (again, if one was shown) and show the review view."""
        self._start_review()
        select = self.query_one("#split-filter", Select)
        if select.value != "review":
            select.value = "review"  # Select.Changed reloads
        else:
            self.reload()

    def _start_review(self) -> None:
        if self.app.model_state == "failed":
            self.app.notify_error(f"Cannot review: the model failed to load ({self.app.model_error})")
            return
        self.review_request = self.app.worker.review(self.app.store.workspace)
        self.query_one(StatusLine).show("reviewing with the latest trained version…")

    def on_worker_event(self, message: WorkerEvent) -> None:
        message.stop()  # the app routes only this screen's reviews here
        event = message.event
        if not isinstance(event, (ReviewDone, ReviewFailed)) or event.request_id != self.review_request:
            return
        self.review_request = None
        if isinstance(event, ReviewFailed):
            self.app.notify_error(event.error, title="Review failed")
            self.query_one(StatusLine).show("review failed: see the message")
            return
        self.review = ReviewList(event.report)
        if self.view == "review":
            self.reload(keep=self.review.rows[0].pair_id if self.review.rows else None)

    def action_toggle_split(self) -> None:
        pair_id = self._selected()
        if pair_id is not None:
            self._change(lambda: self._move(pair_id), "Not moved", keep=pair_id)

    def _move(self, pair_id: int) -> str:
        new = "valid" if self.app.store.get_pair(pair_id).split == "train" else "train"
        self.app.store.update_pair(pair_id, split=new)
        return f"pair #{pair_id} moved to {new}"
