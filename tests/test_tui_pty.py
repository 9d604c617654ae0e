"""The real `mlx-dpo tui` in a pseudo-terminal: the app a user starts, with the keys a terminal sends.

Pilot (the other TUI tests) drives the app inside pytest's process with a fake driver; this test runs the
console script's code path in a child process on a pty, so Textual's own Linux driver, the terminal size
and the escape sequences it reads and writes are the real ones. The screen is read from what the app writes,
with the escape sequences taken out.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

from helpers import REPO

from mlx_dpo.data.store import PreferenceStore

ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|.)")
F3, CTRL_Q = "\x1bOR", "\x11"  # the keys as an xterm sends them
WAIT = 180.0  # seconds; only a hung app takes this long, the test does not time it


class Terminal:
    """A child process on a pty of 120 x 36, and the text it has written so far."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.fd, child = os.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 36, 120, 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=child, stdout=child, stderr=child, cwd=REPO, env=env, start_new_session=True
        )
        os.close(child)
        self.raw = b""

    def read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.fd, 1 << 16)
            except OSError:  # the child closed the terminal
                pass

    def text(self) -> str:
        return ESCAPES.sub("", self.raw.decode("utf-8", "replace"))

    def wait_for(self, *words: str) -> None:
        deadline = time.monotonic() + WAIT
        while not all(w in self.text() for w in words):
            assert self.proc.poll() is None, f"the app exited ({self.proc.returncode}): {self.text()[-2000:]}"
            assert time.monotonic() < deadline, f"no {words} on the screen: {self.text()[-2000:]}"
            self.read(0.1)

    def press(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.fd)


def test_the_real_app_draws_in_a_terminal_switches_screens_by_key_and_quits_with_ctrl_q(tmp_path, tiny):
    workspace = tmp_path / "workspace"
    with PreferenceStore(workspace) as store:
        store.add_pair([{"role": "user", "content": "What is ice made of?"}], "Frozen water.", "Glass.", label=False)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "36"}
    term = Terminal(
        [sys.executable, "-m", "mlx_dpo.cli", "tui", "--workspace", str(workspace), "--model", str(tiny)], env
    )
    try:
        term.wait_for("Label", "Data", "Export", "Quit", "tiny-llama")  # the mode buttons, the footer, the model
        term.raw = b""
        term.press(F3)  # the Data screen lists the stored pair
        term.wait_for("What is ice made of?")
        term.press(CTRL_Q)
        deadline = time.monotonic() + WAIT
        while term.proc.poll() is None:
            assert time.monotonic() < deadline, "ctrl+q did not end the app"
            term.read(0.1)
        assert term.proc.returncode == 0, term.text()[-2000:]
        assert "Traceback" not in term.text()
    finally:
        term.close()
