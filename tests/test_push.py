"""`mlx-dpo push` against a local stand-in for the Hugging Face Hub API (no network).

The server (tests/fake_hub.py) answers the calls huggingface_hub makes for create_repo + upload_folder,
records every request, and answers anything else with 404 so an unexpected call shows up in `unknown`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import FakeHub, hub  # noqa: F401  # the loopback Hub and its fixture
from helpers import REPO, assert_clean_error

TOKEN = "hf_test_token_4f9a1c"
REPO_ID = "someone/tiny-dpo"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A small export-like folder (binary weights, JSON, a model card, a subfolder, a hidden file)."""
    out = tmp_path / "export"
    (out / "sub").mkdir(parents=True)
    (out / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (out / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (out / "README.md").write_text("---\nlibrary_name: mlx\ntags:\n- dpo\n---\n# tiny\n")
    (out / "sub" / "notes.txt").write_text("hello")
    (out / ".DS_Store").write_bytes(b"finder junk")  # hidden files are not part of a model folder
    return out


def push(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    """`mlx-dpo push ...` in a child process whose Hugging Face settings come only from `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    clean.update(
        HF_HOME=str(home),
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="5",
    )
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mlx_dpo.cli", "push", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
        cwd=REPO,
    )


def commit_lines(hub: FakeHub) -> list[dict]:
    (request,) = hub.of("POST", "/commit/")
    return [json.loads(line) for line in request[3].decode().splitlines() if line.strip()]


def assert_token_kept_secret(result: subprocess.CompletedProcess, *places: Path) -> None:
    assert TOKEN not in result.stdout and TOKEN not in result.stderr
    for place in places:
        for path in place.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path


def test_push_creates_the_repo_and_commits_every_file(hub, folder, tmp_path):
    result = push(
        [str(folder), "--repo", REPO_ID, "--private", "--message", "DPO round 1"],
        tmp_path / "hf",
        HF_ENDPOINT=hub.url,
        HF_TOKEN=TOKEN,
    )
    assert result.returncode == 0, result.stderr
    assert hub.unknown == []
    (create,) = hub.of("POST", "/api/repos/create")
    payload = json.loads(create[3])
    assert (payload["organization"], payload["name"]) == ("someone", "tiny-dpo")
    assert payload.get("visibility") == "private" or payload.get("private") is True
    # Every call carries the token, as a bearer token.
    assert all(r[2].get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)
    lines = commit_lines(hub)
    header = lines[0]
    assert header["key"] == "header" and header["value"]["summary"] == "DPO round 1"
    files = {line["value"]["path"]: line["value"] for line in lines if line["key"] == "file"}
    assert set(files) == {"model.safetensors", "config.json", "README.md", "sub/notes.txt"}
    for path, value in files.items():
        assert value["encoding"] == "base64"
        assert base64.b64decode(value["content"]) == (folder / path).read_bytes(), path
    assert not [line for line in lines if line["key"] in ("deletedFile", "deletedFolder")]
    assert "/someone/tiny-dpo/commit/" in result.stdout
    assert_token_kept_secret(result, folder)


def test_push_to_an_existing_repo_adds_a_commit_and_deletes_nothing(hub, folder, tmp_path):
    hub.existing.add(REPO_ID)
    result = push([str(folder), "--repo", REPO_ID], tmp_path / "hf", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    assert hub.unknown == []
    (create,) = hub.of("POST", "/api/repos/create")  # answered 409: the repo is there already
    assert json.loads(create[3]).get("visibility") in (None, "public")
    lines = commit_lines(hub)
    assert {line["key"] for line in lines} == {"header", "file"}
    assert len([line for line in lines if line["key"] == "file"]) == 4
    assert_token_kept_secret(result, folder)


def test_push_without_a_token_says_how_to_log_in(hub, folder, tmp_path):
    result = push([str(folder), "--repo", REPO_ID], tmp_path / "hf", HF_ENDPOINT=hub.url)
    assert_clean_error(result, "no Hugging Face token", "hf auth login", "HF_TOKEN")
    assert hub.requests == []


def test_push_without_write_permission_is_one_clear_line(hub, folder, tmp_path):
    hub.forbid_commit = True
    result = push([str(folder), "--repo", REPO_ID], tmp_path / "hf", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
    assert_clean_error(result, "no permission", REPO_ID, "403")
    assert_token_kept_secret(result, folder)


def test_push_with_nothing_listening_reports_the_network(folder, tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = push(
        [str(folder), "--repo", REPO_ID], tmp_path / "hf", HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_TOKEN=TOKEN
    )
    assert_clean_error(result, "cannot reach the Hugging Face Hub", f"127.0.0.1:{port}")
    assert_token_kept_secret(result, folder)


def test_push_offline_is_refused_before_any_request(hub, folder, tmp_path):
    result = push(
        [str(folder), "--repo", REPO_ID], tmp_path / "hf", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="1"
    )
    assert_clean_error(result, "HF_HUB_OFFLINE")
    assert hub.requests == []


def test_push_of_a_missing_or_empty_folder(tmp_path):
    env = dict(HF_TOKEN=TOKEN, HF_ENDPOINT="http://127.0.0.1:9")
    assert_clean_error(push([str(tmp_path / "nope"), "--repo", REPO_ID], tmp_path / "hf", **env), "no such folder")
    (tmp_path / "empty").mkdir()
    assert_clean_error(push([str(tmp_path / "empty"), "--repo", REPO_ID], tmp_path / "hf", **env), "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    assert_clean_error(push([str(tmp_path / "empty"), "--repo", "not-a-repo-id"], tmp_path / "hf", **env), "OWNER/NAME")
