"""The judge worker: a program judge (`--judge SPEC`) on a daemon thread of its own, for the Label screen's
suggestions.

The judge is loaded on this thread and asked on it too: an `llm:MODEL` judge loads a model, and MLX arrays
stay on the thread that made them. The library's judges (`mlx_dpo.api.load_judge`, which pulls in mlx)
are loaded here, on the thread, never on the UI thread. Only the newest question counts: one asked
while an older one waits replaces it. Events (`tui.workers.events`) go through `report`, on this thread.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

from mlx_dpo import api
from mlx_dpo.errors import MlxDpoError
from tui.workers.events import Event, JudgeFailed, JudgeReady, Suggestion
from tui.workers.thread import ThreadWorker
from tui.workers.thread import describe as _describe


@dataclass(frozen=True)
class _Question:
    id: int
    messages: list[dict]
    answers: tuple[str, str]


def is_program_judge(spec: str | None) -> bool:
    """A judge the app asks for suggestions: any SPEC but none and "human" (the person is the judge)."""
    return spec is not None and spec.strip().lower() not in ("", "human")


class JudgeWorker(ThreadWorker):
    """The judge on a daemon thread of its own (thread.py): loads it, then answers the newest question."""

    def __init__(self, spec: str, rubric: str | None, report: Callable[[Event], None]) -> None:
        super().__init__("mlx-dpo-judge", report)  # requests: _Question | None (stop)
        self.spec, self.rubric = spec, rubric
        self.name = spec  # the judge's own name once loaded (what the store records)
        self._newest = 0

    def suggest(self, messages: list[dict], answers: tuple[str, str]) -> int:
        """Ask which of `answers` (as shown: pane 1, pane 2) is better; returns the question's id."""
        with self._lock:
            self._newest += 1
            question = _Question(self._newest, [dict(m) for m in messages], (answers[0], answers[1]))
        self._requests.put(question)
        return question.id

    def _load(self):
        return api.load_judge(self.spec, rubric=self.rubric)

    def _run(self) -> None:
        try:
            judge = self._load()
        except Exception as e:  # MlxDpoError: a bad SPEC, a missing file...; anything else is printed
            if not isinstance(e, MlxDpoError):
                traceback.print_exc()
            self._report(JudgeFailed(_describe(e)))
            return
        self.name = judge.name
        self._report(JudgeReady(judge.name))
        while True:
            question = self._requests.get()
            if question is None or self._stopping:
                return
            if question.id != self._newest:
                continue  # a newer question is queued behind this one
            try:
                (verdict,) = judge.judge([question.messages], [question.answers])
            except Exception as e:
                self._report(
                    Suggestion(question.id, question.answers, None, f"the judge failed: {_describe(e)}", judge.name)
                )
                continue
            self._report(Suggestion(question.id, question.answers, verdict.choice, verdict.note, judge.name))
