"""The Data screen's files: `i` imports pairs from JSONL, `x` exports them (the shown split, or all).

A mixin of `DataScreen`. Both run in thread workers (the store is thread-safe) and report back on the
event loop when done; a bad file adds nothing and every problem is listed.
"""

from __future__ import annotations

from pathlib import Path

from textual import work

from mlx_dpo.errors import MlxDpoError
from tui.modals import PathChoice, PathModal
from tui.widgets import StatusLine


class FileActions:
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
            PathModal(
                f"Export {which} to JSONL",
                "Conversational format; the file is written atomically.",
                default,
                ok="Export",
            ),
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
