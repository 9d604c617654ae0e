"""Data: every stored pair in a table; search, filter by split, view/edit, delete, swap, move, import, export.

Single-row changes run on the event loop (each is one small committed transaction); importing and
exporting files run in thread workers (the store is thread-safe) and report back when done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Select

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.data.store import StoredPair
from tui.modals import ConfirmModal, PairEdits, PairModal, PathChoice, PathModal
from tui.prompts import age, prompt_snippet, snippet
from tui.widgets import ModeBar, ScreenButton, StatusLine

COLUMNS = (("id", 5), ("split", 6), ("origin", 8), ("prompt", 30), ("chosen", 24), ("rejected", 24), ("updated", 8))
SPLIT_FILTERS = [("all splits", "all"), ("train", "train"), ("valid", "valid")]


class DataScreen(Screen):
    BINDINGS = [
        Binding("enter", "open_pair", "View/edit", show=False, tooltip="View or edit the selected pair"),
        Binding("delete", "delete_pair", "Delete", tooltip="Delete the selected pair"),
        Binding("s", "swap", "Swap", tooltip="Swap chosen and rejected of the selected pair"),
        Binding("v", "toggle_split", "Train/valid", tooltip="Move the selected pair between train and valid"),
        Binding("f", "cycle_filter", "Filter split", tooltip="Show all / train / valid pairs"),
        Binding("slash", "focus_search", "Search", tooltip="Search prompts, answers and notes"),
        Binding("i", "import_pairs", "Import", tooltip="Import pairs from a JSONL file"),
        Binding("x", "export_pairs", "Export", tooltip="Export pairs to a JSONL file"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="data-screen")
        self.pair_ids: list[int] = []

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
            yield ScreenButton("v train/valid", "toggle_split", id="data-split")
            yield ScreenButton("i import", "import_pairs", id="data-import")
            yield ScreenButton("x export", "export_pairs", id="data-export")
            yield StatusLine(id="data-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#pairs", DataTable)
        for name, width in COLUMNS:
            table.add_column(name, width=width, key=name)
        self.reload()
        table.focus()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.reload()

    # --- the table ---

    @property
    def split_filter(self) -> str | None:
        value = self.query_one("#split-filter", Select).value
        return None if value in ("all", Select.BLANK) else str(value)

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
        table.clear()
        for p in pairs:
            table.add_row(
                str(p.id), p.split, p.origin, Text(prompt_snippet(p.prompt, 60)), Text(snippet(p.chosen, 50)),
                Text(snippet(p.rejected, 50)), age(p.updated_at), key=str(p.id),
            )
        self.pair_ids = [p.id for p in pairs]
        if keep in self.pair_ids:
            table.move_cursor(row=self.pair_ids.index(keep), animate=False)
        plural = "s" * (total != 1)
        shown = f"{len(pairs)} of {total} pair{plural}" if (search or self.split_filter) else f"{total} pair{plural}"
        self.query_one(StatusLine).show(shown)

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
        self.reload()

    def action_cycle_filter(self) -> None:
        select = self.query_one("#split-filter", Select)
        values = [v for _, v in SPLIT_FILTERS]
        select.value = values[(values.index(select.value) + 1) % len(values)] if select.value in values else "all"

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
        self.app.store.update_pair(pair_id, prompt=edits.prompt, chosen=edits.chosen, rejected=edits.rejected,
                                   note=edits.note)
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
            self._change(lambda: self._delete(pair_id), "Not deleted",
                         keep=remaining[min(index, len(remaining) - 1)] if remaining else None)

        self.app.push_screen(ConfirmModal(question, yes="Delete"), confirmed)

    def _delete(self, pair_id: int) -> str:
        self.app.store.delete_pair(pair_id)
        return f"deleted pair #{pair_id}"

    def action_swap(self) -> None:
        pair_id = self._selected()
        if pair_id is not None:
            self._change(lambda: self._swap(pair_id), "Not swapped", keep=pair_id)

    def _swap(self, pair_id: int) -> str:
        self.app.store.swap_pair(pair_id)
        return f"pair #{pair_id}: chosen and rejected swapped"

    def action_toggle_split(self) -> None:
        pair_id = self._selected()
        if pair_id is not None:
            self._change(lambda: self._move(pair_id), "Not moved", keep=pair_id)

    def _move(self, pair_id: int) -> str:
        new = "valid" if self.app.store.get_pair(pair_id).split == "train" else "train"
        self.app.store.update_pair(pair_id, split=new)
        return f"pair #{pair_id} moved to {new}"

    # --- files ---

    def action_import_pairs(self) -> None:
        self.app.push_screen(
            PathModal(
                "Import pairs from JSONL",
                "TRL standard or conversational rows. A bad file adds nothing and every problem is listed.",
                ok="Import",
                skip_invalid_option=True,
            ),
            self._import_chosen,
        )

    def _import_chosen(self, choice: PathChoice | None) -> None:
        self.action_focus_table()
        if choice is not None:
            self.query_one(StatusLine).show(f"importing {choice.path}…")
            self._import(choice.path, choice.skip_invalid)

    @work(thread=True, exclusive=True, group="files")
    def _import(self, path: str, skip_invalid: bool) -> None:
        try:
            result = self.app.store.import_jsonl(Path(path).expanduser(), skip_invalid=skip_invalid)
        except MlxDpoError as e:
            self.app.call_from_thread(self._file_failed, "Import failed", str(e))
            return
        self.app.call_from_thread(self._imported, result)

    def _imported(self, result) -> None:
        parts = [f"imported {result.added} pair{'s' * (result.added != 1)}"]
        if result.duplicates:
            parts.append(f"{result.duplicates} already stored")
        if result.skipped_invalid:
            parts.append(f"{result.skipped_invalid} invalid rows skipped")
        text = ", ".join(parts)
        self.app.notify(text, title="Import", severity="warning" if result.skipped_invalid else "information")
        for error in result.errors[:5]:
            self.app.notify_warning(error)
        self.app.store_changed()
        self.reload()
        self.query_one(StatusLine).show(text)

    def _file_failed(self, title: str, error: str) -> None:
        self.app.notify_error(error, title=title, timeout=12)
        self.query_one(StatusLine).show(f"{title.lower()}: see the message")

    def action_export_pairs(self) -> None:
        split = self.split_filter
        name = f"pairs-{split}.jsonl" if split else "pairs.jsonl"
        default = str(self.app.store.workspace / name)
        which = f"the {split} pairs" if split else "all pairs"
        self.app.push_screen(
            PathModal(f"Export {which} to JSONL", "Conversational format; the file is written atomically.",
                      default, ok="Export"),
            lambda choice: self._export_chosen(choice, split),
        )

    def _export_chosen(self, choice: PathChoice | None, split: str | None) -> None:
        self.action_focus_table()
        if choice is not None:
            self._export(choice.path, split)

    @work(thread=True, exclusive=True, group="files")
    def _export(self, path: str, split: str | None) -> None:
        try:
            count = self.app.store.export_jsonl(Path(path).expanduser(), split=split)
        except MlxDpoError as e:
            self.app.call_from_thread(self._file_failed, "Export failed", str(e))
            return
        self.app.call_from_thread(self.app.notify, f"exported {count} pairs to {path}", title="Export")
