"""Export: fuse an adapter into its base (Hugging Face folder or GGUF) or convert it for PEFT, then push it.

The same library calls as `mlx-dpo export` and `mlx-dpo push`, through `tui.workers.export`.
Each runs in a thread worker. MLX streams are thread-local, so one worker thread does the whole export
(imports, model load, fuse, write): no MLX array crosses threads. Stages ("loading base", "fusing",
"writing") come from the library's `on_stage` callback.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, ProgressBar, Select, Static

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.settings import EXPORT_FORMATS, GGUF_TYPES
from tui.widgets import ModeBar, ScreenButton, StatusLine
from tui.workers.export import push_folder, run_export

FORMAT_CHOICES = [(f"{name}: {what}", name) for name, what in EXPORT_FORMATS.items()]
GGUF_CHOICES = [(name, name) for name in GGUF_TYPES]
# Files an adapter folder holds (mlx_dpo.models.adapter.CONFIG_FILE / ADAPTER_FILE; not imported: that imports MLX).
ADAPTER_FILES = ("adapter_config.json", "adapters.safetensors")
STAGES = ("loading base", "fusing", "writing", "done")


def newest_adapter(workspace: Path) -> Path | None:
    """The most recently written adapter folder under `<workspace>/adapters/`, if any."""
    root = workspace / "adapters"
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and all((p / n).is_file() for n in ADAPTER_FILES)]
    except OSError:
        return None
    return max(folders, key=lambda p: (p / ADAPTER_FILES[1]).stat().st_mtime, default=None)


def suggested_out(workspace: Path, adapter: str, fmt: str, gguf_type: str) -> str:
    """`<workspace>/exports/<adapter name>-<format>` (a .gguf file for gguf); empty without an adapter."""
    name = Path(adapter.strip()).expanduser().name if adapter.strip() else ""
    if not name:
        return ""
    leaf = f"{name}-{gguf_type}.gguf" if fmt == "gguf" else f"{name}-{fmt}"
    return str(workspace / "exports" / leaf)


def _scrub(text: str) -> str:
    """Never show a Hugging Face token, even in an unexpected error."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # noqa: BLE001
        token = None
    return text.replace(token, "***") if token else text


class ExportScreen(Screen):
    BINDINGS = [
        # priority: Input binds ctrl+e (end of line) and ctrl+u (delete to start) itself.
        Binding("ctrl+e", "export", "Export", priority=True, tooltip="Export the adapter (fuse / convert)"),
        Binding("ctrl+u", "push", "Push", priority=True, tooltip="Push the output folder to the Hugging Face Hub"),
        Binding("escape", "leave_input", "Leave input", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="export-screen")
        self.busy: str | None = None  # "export" or "push" while a worker runs
        self.stage = ""
        self.log_lines: list[str] = []
        self._suggested = ""  # the output path last filled in automatically

    def compose(self) -> ComposeResult:
        yield ModeBar("export")
        with Vertical(id="export-form"):
            with Horizontal(classes="export-row"):
                yield Label("adapter", classes="export-label")
                yield Input(
                    placeholder="adapter folder (adapter_config.json + adapters.safetensors)",
                    id="export-adapter",
                    compact=True,
                )
            with Horizontal(classes="export-row"):
                yield Label("base model", classes="export-label")
                yield Input(
                    placeholder="optional: empty = the base the adapter was trained on", id="export-model", compact=True
                )
            with Horizontal(classes="export-row"):
                yield Label("format", classes="export-label")
                yield Select(FORMAT_CHOICES, value="hf", allow_blank=False, id="export-format", compact=True)
                yield Label("gguf type", classes="export-label-inline")
                yield Select(GGUF_CHOICES, value="f16", allow_blank=False, id="export-gguf-type", compact=True)
            with Horizontal(classes="export-row"):
                yield Label("output", classes="export-label")
                yield Input(placeholder="output folder (gguf: the .gguf file)", id="export-out", compact=True)
            with Horizontal(classes="export-row"):
                yield Label("", classes="export-label")
                yield Checkbox("dequantize (hf: dense float16 weights)", id="export-dequantize", compact=True)
                yield Checkbox("overwrite an existing output", id="export-overwrite", compact=True)
            with Horizontal(classes="export-buttons"):
                yield ScreenButton("ctrl+e export", "export", id="export-run", variant="primary")
                yield ProgressBar(total=len(STAGES), show_eta=False, show_percentage=False, id="export-progress")
                yield StatusLine(id="export-status")
            yield Static("", id="export-log")
            yield Static("Push to the Hugging Face Hub (the output folder above)", classes="export-heading")
            with Horizontal(classes="export-row"):
                yield Label("repo", classes="export-label")
                yield Input(placeholder="OWNER/NAME", id="push-repo", compact=True)
                yield Checkbox("private", id="push-private", compact=True)
            with Horizontal(classes="export-row"):
                yield Label("message", classes="export-label")
                yield Input(placeholder="commit message (optional)", id="push-message", compact=True)
            with Horizontal(classes="export-buttons"):
                yield ScreenButton("ctrl+u push", "push", id="push-run")
                yield StatusLine(id="push-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#export-progress", ProgressBar).display = False
        adapter = newest_adapter(self.app.store.workspace)
        if adapter is not None:
            self.query_one("#export-adapter", Input).value = str(adapter)
        self._suggest_out()
        self._format_changed()
        self.query_one("#export-adapter", Input).focus()

    # --- the form ---

    def value(self, selector: str) -> str:
        return self.query_one(selector, Input).value.strip()

    @property
    def fmt(self) -> str:
        return str(self.query_one("#export-format", Select).value)

    @property
    def gguf_type(self) -> str:
        return str(self.query_one("#export-gguf-type", Select).value)

    def _suggest_out(self) -> None:
        """Fill in the output path from the adapter and format, unless the user typed their own."""
        out = self.query_one("#export-out", Input)
        if out.value and out.value != self._suggested:
            return
        self._suggested = suggested_out(
            self.app.store.workspace, self.value("#export-adapter"), self.fmt, self.gguf_type
        )
        out.value = self._suggested

    @on(Input.Changed, "#export-adapter")
    def _adapter_changed(self) -> None:
        self._suggest_out()

    @on(Select.Changed, "#export-format")
    @on(Select.Changed, "#export-gguf-type")
    def _format_changed(self) -> None:
        self.query_one("#export-dequantize", Checkbox).disabled = self.fmt != "hf"
        self.query_one("#export-gguf-type", Select).disabled = self.fmt != "gguf"
        self._suggest_out()

    def action_leave_input(self) -> None:
        self.set_focus(None)

    def _set(self, selector: str, text: str, style: str = "") -> None:
        self.query_one(selector, StatusLine).show(text, style)

    def _log(self, line: str) -> None:
        self.log_lines.append(line)
        self.query_one("#export-log", Static).update(Text("\n".join(self.log_lines[-4:])))

    def _set_busy(self, busy: str | None) -> None:
        self.busy = busy
        self.query_one("#export-run", Button).disabled = busy is not None
        self.query_one("#push-run", Button).disabled = busy is not None

    def _refuse_if_busy(self) -> bool:
        if self.busy is not None:
            self.app.notify_warning(f"wait: the {self.busy} is still running")
            return True
        return False

    # --- export ---

    def action_export(self) -> None:
        if self._refuse_if_busy():
            return
        adapter, out = self.value("#export-adapter"), self.value("#export-out")
        problem, focus = None, ""
        if not adapter:
            problem, focus = "No adapter folder: type the path of the adapter to export.", "#export-adapter"
        elif not out:
            problem, focus = "No output path: type where to write the export.", "#export-out"
        if self._refused("Not exported", problem, focus):
            return
        self._set_busy("export")
        self.log_lines = []
        self.stage = ""
        bar = self.query_one("#export-progress", ProgressBar)
        bar.update(total=len(STAGES), progress=0)
        bar.display = True
        self._set("#export-status", f"exporting {self.fmt}…")
        self._export(
            adapter,
            out,
            self.fmt,
            self.value("#export-model") or None,
            self.query_one("#export-dequantize", Checkbox).value,
            self.gguf_type,
            self.query_one("#export-overwrite", Checkbox).value,
        )

    @work(thread=True, exclusive=True, group="export")
    def _export(
        self, adapter: str, out: str, fmt: str, model: str | None, dequantize: bool, gguf_type: str, overwrite: bool
    ) -> None:
        # Everything MLX happens on this one thread (see the module docstring).
        def report(stage: str) -> None:
            self.app.call_from_thread(self._stage, stage)

        try:
            self.app.call_from_thread(self._stage, "loading base")
            result = run_export(
                adapter,
                out,
                fmt=fmt,
                model=model,
                dequantize=dequantize,
                gguf_type=gguf_type,
                overwrite=overwrite,
                report=report,
            )
        except MlxDpoError as e:
            self.app.call_from_thread(self._export_failed, str(e))
        except Exception as e:  # noqa: BLE001  # never take the app down: show it instead
            self.app.call_from_thread(self._export_failed, f"unexpected error ({type(e).__name__}: {e})")
        else:
            self.app.call_from_thread(self._exported, str(result.path), result.format, list(result.notes))

    def _stage(self, stage: str) -> None:
        if stage == self.stage:
            return
        self.stage = stage
        self.query_one("#export-progress", ProgressBar).update(progress=STAGES.index(stage))
        self._log(stage)
        self._set("#export-status", f"{stage}…")

    def _exported(self, path: str, fmt: str, notes: list[str]) -> None:
        self.stage = "done"
        self._set_busy(None)
        bar = self.query_one("#export-progress", ProgressBar)
        bar.update(progress=len(STAGES))
        bar.display = False
        self._log(f"done: {path}")
        for note in notes:
            self._log(f"note: {note}")
            self.app.notify_warning(note, timeout=10)
        self._set("#export-status", f"exported {fmt} to {path}", "saved")
        self.app.notify(f"exported {fmt} to {path}", title="Export", timeout=6)

    def _export_failed(self, error: str) -> None:
        self.stage = "failed"
        self._set_busy(None)
        self.query_one("#export-progress", ProgressBar).display = False
        self._log(f"failed: {error}")
        self._failed("Export failed", error)

    def _failed(self, title: str, error: str, selector: str = "#export-status") -> None:
        self.app.notify_error(error, title=title, timeout=12)
        self._set(selector, f"{title.lower()}: {error}", "error")

    def _refused(self, title: str, problem: str | None, focus: str, selector: str = "#export-status") -> bool:
        """A form problem (if any) is shown, and the field to fix gets the focus."""
        if problem is None:
            return False
        self._failed(title, problem, selector)
        self.query_one(focus).focus()
        return True

    # --- push ---

    def action_push(self) -> None:
        if self._refuse_if_busy():
            return
        folder, repo = self.value("#export-out"), self.value("#push-repo")
        problem, focus = None, ""
        if not folder:
            problem, focus = "No folder to push: fill in the output path above (export first).", "#export-out"
        elif not repo:
            problem, focus = "No repo: type the Hub repo to push to, as OWNER/NAME.", "#push-repo"
        elif folder.lower().endswith(".gguf"):
            problem, focus = (
                (
                    "Push uploads a folder; the output is a .gguf file. Export hf or peft, "
                    "or put the GGUF file in a folder of its own and name that folder."
                ),
                "#export-out",
            )
        if self._refused("Not pushed", problem, focus, "#push-status"):
            return
        self._set_busy("push")
        self._set("#push-status", f"pushing to {repo}…")
        self._push(folder, repo, self.query_one("#push-private", Checkbox).value, self.value("#push-message") or None)

    @work(thread=True, exclusive=True, group="push")
    def _push(self, folder: str, repo: str, private: bool, message: str | None) -> None:
        try:
            url = push_folder(folder, repo, private=private, message=message)
        except MlxDpoError as e:
            self.app.call_from_thread(self._push_failed, _scrub(str(e)))
        except Exception as e:  # noqa: BLE001
            self.app.call_from_thread(self._push_failed, _scrub(f"unexpected error ({type(e).__name__}: {e})"))
        else:
            self.app.call_from_thread(self._pushed, url)

    def _pushed(self, url: str) -> None:
        self._set_busy(None)
        self._set("#push-status", f"pushed: {url}", "saved")
        self.app.notify(f"pushed: {url}", title="Push", timeout=8)

    def _push_failed(self, error: str) -> None:
        self._set_busy(None)
        self._failed("Push failed", error, "#push-status")
