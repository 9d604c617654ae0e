"""A local stand-in for the Hugging Face Hub API (no network), for the push tests of the CLI and the app.

The server answers the calls huggingface_hub makes for create_repo + upload_folder, records every
request, and answers anything else with 404 so an unexpected call shows up in `unknown`.
Use the `hub` fixture: `from fake_hub import hub  # noqa: F401` in a test module.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class FakeHub:
    url: str = ""
    existing: set = field(default_factory=set)  # repo ids that already exist (create answers 409)
    forbid_commit: bool = False  # commit answers 403
    requests: list = field(default_factory=list)  # (method, path, headers, body bytes)
    unknown: list = field(default_factory=list)

    def of(self, method: str, fragment: str) -> list:
        return [r for r in self.requests if r[0] == method and fragment in r[1]]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            hub.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            return body

        def do_GET(self):
            self._record()
            hub.unknown.append(("GET", self.path))
            self._reply(404, {"error": "not found"})

        def do_POST(self):
            body = self._record()
            path = self.path.split("?")[0]
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo = f"{payload['organization']}/{payload['name']}"
                if repo in hub.existing:
                    error = {"error": "You already created this model repo", "url": f"{hub.url}/{repo}"}
                    return self._reply(409, error)
                hub.existing.add(repo)
                return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
            if path == "/api/validate-yaml":
                return self._reply(200, {"warnings": []})
            if path.startswith("/api/models/") and "/preupload/" in path:
                files = json.loads(body)["files"]
                return self._reply(
                    200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            if path.startswith("/api/models/") and "/commit/" in path:
                if hub.forbid_commit:
                    return self._reply(403, {"error": "You don't have the rights to create a commit in this repo"})
                repo = path[len("/api/models/") :].split("/commit/")[0]
                return self._reply(
                    200,
                    {"commitUrl": f"{hub.url}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40, "pullRequestUrl": None},
                )
            hub.unknown.append(("POST", self.path))
            self._reply(404, {"error": "not found"})

    return Handler


@pytest.fixture
def hub():
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield hub
    server.shutdown()
    server.server_close()
