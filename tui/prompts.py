"""Prompt plumbing for the screens: message lists <-> editor fields, prompt queues, short cell text.

No Textual and no model code here, so it is easy to test and to reuse. A queue file is read by the library's
prompt-file rule (mlx_dpo.data.prompt_file, shared with `mlx-dpo online`), so a queued prompt can always be saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mlx_dpo.api import PromptFileError, read_prompt_file

QueueError = PromptFileError  # a prompt queue file that cannot be read; the message names the file and line


@dataclass(frozen=True)
class PromptParts:
    """A prompt as the editors show it: optional system message, the user message, earlier turns kept as is."""

    system: str = ""
    user: str = ""
    context: tuple[dict, ...] = field(default_factory=tuple)  # turns between the system and the last user turn

    @classmethod
    def from_messages(cls, messages: list[dict]) -> PromptParts:
        messages = [dict(m) for m in messages]
        system = ""
        if messages and messages[0].get("role") == "system":
            system = messages.pop(0).get("content", "")
        user = ""
        if messages and messages[-1].get("role") == "user":
            user = messages.pop().get("content", "")
        return cls(system, user, tuple(messages))

    def messages(self) -> list[dict]:
        out = [{"role": "system", "content": self.system}] if self.system.strip() else []
        out += [dict(m) for m in self.context]
        return out + [{"role": "user", "content": self.user}]

    @property
    def empty(self) -> bool:
        return not self.user.strip()


def read_prompt_queue(path: str | Path) -> list[list[dict]]:
    """Prompts to label, as message lists: the library's prompt-file rule (mlx_dpo.data.prompt_file)."""
    return read_prompt_file(path)


class PromptQueue:
    """The prompts of a queue file and which one the Label screen shows (`pos`, None before the first)."""

    def __init__(self, prompts: list[list[dict]] | None = None, name: str = "") -> None:
        self.prompts = prompts or []
        self.name = name
        self.pos: int | None = None

    @classmethod
    def open(cls, path: str | Path) -> PromptQueue:
        """Raises QueueError naming the file (and lines) when it cannot be read."""
        return cls(read_prompt_queue(path), Path(path).name)

    def __bool__(self) -> bool:
        return bool(self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def next_index(self) -> int | None:
        """The index of the prompt after the shown one, None at the end (or with no queue)."""
        index = 0 if self.pos is None else self.pos + 1
        return index if index < len(self.prompts) else None

    @property
    def finished(self) -> bool:
        """The last prompt is shown."""
        return bool(self.prompts) and self.pos is not None and self.next_index is None

    def show(self, index: int) -> PromptParts:
        """Move to prompt `index` and return it for the editor."""
        self.pos = index
        return PromptParts.from_messages(self.prompts[index])

    def status(self) -> str:
        if not self.prompts:
            return "no queue · o to open one"
        return f"queue {self.name} {0 if self.pos is None else self.pos + 1}/{len(self.prompts)}"


def snippet(text: str, width: int = 40) -> str:
    """One line of at most `width` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def prompt_snippet(messages: list[dict], width: int = 40) -> str:
    user = [m["content"] for m in messages if m.get("role") == "user"]
    return snippet(user[-1] if user else "", width)


def age(timestamp: float, now: float | None = None) -> str:
    """How long ago, coarsely: "now", "5m", "3h", "2d", then the date."""
    seconds = max(0.0, (time.time() if now is None else now) - timestamp)
    if seconds < 60:
        return "now"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    if seconds < 30 * 86400:
        return f"{int(seconds // 86400)}d"
    return time.strftime("%Y-%m-%d", time.localtime(timestamp))
