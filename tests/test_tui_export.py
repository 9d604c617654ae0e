"""The Export screen (F6): exports and pushes driven through Textual's Pilot, with a tiny real model and adapter."""

from __future__ import annotations

import base64
import json
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fake_hub import hub  # noqa: F401  # the loopback Hub of the push tests
from helpers import errors, make_adapter, model_ready, type_text, wait_until

from tui.app import MlxDpoApp
from tui.screens.export import ExportScreen, newest_adapter
from tui.workers import SampleSettings

pytestmark = pytest.mark.anyio

SIZE = (120, 36)
TOKEN = "hf_test_token_4f9a1c"
TINY_SEED = 3  # this module's `tiny` model (conftest.py)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny) -> Path:
    return make_adapter(str(tiny), tmp_path_factory.mktemp("adapters") / "run1")


@asynccontextmanager
async def export_screen(tiny: Path, workspace: Path):
    app = MlxDpoApp(workspace, model=str(tiny), settings=SampleSettings(max_tokens=8))
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, ExportScreen), what="the Export screen")
        yield pilot, app.screen


async def fill(pilot, screen: ExportScreen, selector: str, text: str) -> None:
    widget = screen.query_one(selector)
    widget.value = ""
    widget.focus()
    await pilot.pause()
    await type_text(pilot, text)


async def finished(pilot, screen: ExportScreen, what: str = "the export") -> None:
    await pilot.pause()
    await wait_until(pilot, lambda: screen.busy is None, timeout=120, what=what)
    await pilot.pause()


def status(screen: ExportScreen, selector: str = "#export-status") -> str:
    return str(screen.query_one(selector).render())


async def test_export_hf_from_the_screen(tiny, adapter, workspace, tmp_path):
    out = tmp_path / "out" / "fused"
    async with export_screen(tiny, workspace) as (pilot, screen):
        await fill(pilot, screen, "#export-adapter", str(adapter))
        await fill(pilot, screen, "#export-out", str(out))
        await pilot.press("ctrl+e")
        await finished(pilot, screen)
        app = pilot.app
        assert errors(app) == []
        assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
        assert (out / "config.json").is_file()
        assert screen.log_lines[:3] == ["loading base", "fusing", "writing"]
        assert screen.log_lines[3] == f"done: {out}"
        assert f"exported hf to {out}" in status(screen)


async def test_non_empty_output_without_overwrite_is_refused(tiny, adapter, workspace, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    async with export_screen(tiny, workspace) as (pilot, screen):
        await fill(pilot, screen, "#export-adapter", str(adapter))
        await fill(pilot, screen, "#export-out", str(out))
        await pilot.click("#export-run")
        await finished(pilot, screen)
        (error,) = errors(pilot.app)
        assert "not empty" in error and "overwrite" in error
        assert "export failed" in status(screen) and "not empty" in status(screen)
        assert screen.stage == "failed"
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


async def test_a_missing_adapter_is_an_error(tiny, workspace, tmp_path):
    async with export_screen(tiny, workspace) as (pilot, screen):
        await fill(pilot, screen, "#export-adapter", str(tmp_path / "no-such-adapter"))
        await fill(pilot, screen, "#export-out", str(tmp_path / "out"))
        await pilot.press("ctrl+e")
        await finished(pilot, screen)
        (error,) = errors(pilot.app)
        assert "adapter folder not found" in error
        assert "adapter folder not found" in status(screen)
        # An empty adapter field is refused before any work starts.
        await fill(pilot, screen, "#export-adapter", "")
        await pilot.press("ctrl+e")
        await pilot.pause()
        assert "No adapter folder" in errors(pilot.app)[-1]
    assert not (tmp_path / "out").exists()


async def test_push_offline_is_a_clear_error(tiny, adapter, workspace, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # conftest sets HF_HUB_OFFLINE=1 already: make sure
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "README.md").write_text("# tiny\n")
    async with export_screen(tiny, workspace) as (pilot, screen):
        await fill(pilot, screen, "#export-out", str(folder))
        await fill(pilot, screen, "#push-repo", "someone/tiny-dpo")
        await pilot.press("ctrl+u")
        await finished(pilot, screen, "the push")
        (error,) = errors(pilot.app)
        assert "HF_HUB_OFFLINE" in error
        assert "HF_HUB_OFFLINE" in status(screen, "#push-status")
        assert all(TOKEN not in text for _, text in pilot.app.notices)


async def test_export_then_push_from_the_screen_to_the_hub(tiny, adapter, workspace, tmp_path, monkeypatch, hub):
    from huggingface_hub import constants

    # The app pushes in this process: point huggingface_hub at the loopback Hub, online, with a token.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "out"
    async with export_screen(tiny, workspace) as (pilot, screen):
        await fill(pilot, screen, "#export-adapter", str(adapter))
        await fill(pilot, screen, "#export-out", str(out))
        await pilot.press("ctrl+e")
        await finished(pilot, screen)
        await fill(pilot, screen, "#push-repo", "someone/tiny-dpo")
        await pilot.press("ctrl+u")
        await finished(pilot, screen, "the push")
        assert errors(pilot.app) == []
        assert "someone/tiny-dpo" in status(screen, "#push-status")
        assert all(TOKEN not in text for _, text in pilot.app.notices)
    # (huggingface_hub also asks the Hub, at most once a day, for its list of AI agent harnesses: harmless.)
    assert [call for call in hub.unknown if call != ("GET", "/api/agent-harnesses")] == []
    assert len(hub.of("POST", "/api/repos/create")) == 1
    (commit,) = hub.of("POST", "/commit/")
    lines = [json.loads(line) for line in commit[3].decode().splitlines() if line.strip()]
    pushed = {line["value"]["path"]: line["value"] for line in lines if line["key"] == "file"}
    exported = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert set(pushed) == exported and "model.safetensors" in pushed  # the export, every file of it
    assert base64.b64decode(pushed["config.json"]["content"]) == (out / "config.json").read_bytes()


async def test_push_without_a_token_or_repo(tiny, workspace, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "README.md").write_text("# tiny\n")
    async with export_screen(tiny, workspace) as (pilot, screen):
        await fill(pilot, screen, "#export-out", str(folder))
        await pilot.press("ctrl+u")
        await pilot.pause()
        assert "OWNER/NAME" in errors(pilot.app)[-1]
        await fill(pilot, screen, "#push-repo", "someone/tiny-dpo")
        await pilot.click("#push-run")
        await finished(pilot, screen, "the push")
        assert "no Hugging Face token" in errors(pilot.app)[-1]
        assert "hf auth login" in status(screen, "#push-status")


def test_newest_adapter_and_default_fields(tmp_path, adapter):
    import os
    import shutil

    assert newest_adapter(tmp_path) is None
    older = shutil.copytree(adapter, tmp_path / "adapters" / "older")
    newer = shutil.copytree(adapter, tmp_path / "adapters" / "newer")
    (tmp_path / "adapters" / "not-an-adapter").mkdir()
    os.utime(older / "adapters.safetensors", (1, 1))
    assert newest_adapter(tmp_path) == newer


async def test_default_adapter_is_the_newest_in_the_workspace(tiny, adapter, workspace):
    import shutil

    shutil.copytree(adapter, workspace / "adapters" / "run7")
    async with export_screen(tiny, workspace) as (pilot, screen):
        assert screen.query_one("#export-adapter").value == str(workspace / "adapters" / "run7")
        assert screen.query_one("#export-out").value == str(workspace / "exports" / "run7-hf")
        screen.query_one("#export-format").value = "gguf"
        await pilot.pause()
        assert screen.query_one("#export-out").value == str(workspace / "exports" / "run7-f16.gguf")
        assert screen.query_one("#export-dequantize").disabled


async def test_export_peft_and_gguf(tiny, adapter, workspace, tmp_path):
    async with export_screen(tiny, workspace) as (pilot, screen):
        await fill(pilot, screen, "#export-adapter", str(adapter))
        screen.query_one("#export-format").value = "peft"
        await pilot.pause()  # the format change suggests an output path: type over it afterwards
        await fill(pilot, screen, "#export-out", str(tmp_path / "peft"))
        await pilot.press("ctrl+e")
        await finished(pilot, screen)
        assert errors(pilot.app) == []
        assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
        assert screen.log_lines[-1] == f"done: {tmp_path / 'peft'}" and "fusing" not in screen.log_lines
        screen.query_one("#export-format").value = "gguf"
        screen.query_one("#export-gguf-type").value = "q8_0"
        await pilot.pause()
        await fill(pilot, screen, "#export-out", str(tmp_path / "tiny.gguf"))
        await pilot.press("ctrl+e")
        await finished(pilot, screen)
        assert errors(pilot.app) == []
        assert (tmp_path / "tiny.gguf").is_file()
        assert screen.log_lines[:3] == ["loading base", "fusing", "writing"]
        assert f"done: {tmp_path / 'tiny.gguf'}" in screen.log_lines


async def test_the_cli_and_the_screen_make_the_same_export_call(
    tiny, adapter, workspace, tmp_path, monkeypatch, capsys
):
    """Both go through `mlx_dpo.export.export`: the writers are replaced where only its dispatch finds them,
    so a caller with a dispatch of its own would run the real export instead and fail here."""
    import mlx_dpo.export as export_package
    from mlx_dpo.cli import main

    calls: list[tuple] = []

    def fake(fmt: str):
        def write(adapter_path, out, *, on_stage, **options):
            calls.append((fmt, str(adapter_path), str(out), options))
            return export_package.ExportResult(Path(out), fmt, [f"{fmt} note"])

        return write

    for fmt in export_package.FORMATS:
        monkeypatch.setattr(export_package, f"export_{fmt}", fake(fmt))
    outs = {"hf": tmp_path / "hf", "peft": tmp_path / "peft", "gguf": tmp_path / "tiny.gguf"}
    for fmt, out in outs.items():
        assert main(["export", "--adapter-path", str(adapter), "--out", str(out), "--format", fmt]) == 0
        captured = capsys.readouterr()
        assert captured.out == f"exported {fmt} to {out}\n" and captured.err == f"mlx-dpo: note: {fmt} note\n"
    from_cli, calls[:] = list(calls), []

    async with export_screen(tiny, workspace) as (pilot, screen):
        await fill(pilot, screen, "#export-adapter", str(adapter))
        for fmt, out in outs.items():
            screen.query_one("#export-format").value = fmt
            await pilot.pause()
            await fill(pilot, screen, "#export-out", str(out))
            await pilot.press("ctrl+e")
            await finished(pilot, screen)
            assert errors(pilot.app) == []
            assert f"exported {fmt} to {out}" in status(screen) and f"note: {fmt} note" in screen.log_lines
    assert calls == from_cli and [c[0] for c in calls] == list(outs)
