"""Who judges a pair of answers: a Python function, a local LLM, or a person. `load_judge(spec)` is the one
place a `--judge SPEC` becomes a Judge.

SPEC forms:
  path/to/file.py:NAME   a callable NAME defined in that file (NAME may be dotted: Class.method)
  module:NAME            a callable NAME in an importable module (e.g. mlx_dpo.online.demo_judges:one_sentence)
  llm:MODEL              a local mlx-lm model (any `--model` value, `llm:default` for the embedded one), asked
                         with a rubric which answer is better, once in each order (see llm_judge.py)
  human                  a person, in the app; the loop hands this judge to it and never calls `judge()`
  reward:TERM + TERM     a score judge from readable rewards (length target, question, no repeats, regex) and
                         their weighted sum (mlx_dpo.online.rewards)

A callable's signature says its kind, by the number of parameters it needs positionally:
  score(prompt, answer) -> float                       higher is better; equal scores are a tie
  prefer(prompt, answer_1, answer_2) -> 1 | 2 | 0 | None  1 or 2: that answer is better, 0: a tie, None: skip

`prompt` is passed as a `Prompt`: a `str` holding the text of the conversation's last user message, so
`len(prompt)` or `"poem" in prompt` just work; its `.messages` holds the whole chat (system message and
earlier turns included) for a judge that needs a multi-turn conversation. Each answer is an `Answer`, a `str`
whose `.finished` is False when sampling cut it at max tokens.

A score judge's score of an unfinished answer is the function's score minus `missing_end_penalty` (TRL's
`missing_eos_penalty`; `--missing-end-penalty`, mlx_dpo.settings.OnlineSettings) where answers are compared:
choosing a round's pair and the held-out win rates. The held-out *score* is the function's own (`raw_score`),
so a gain a person reads is the judge's preference, not "cut less often" (that has its own figure,
heldout/unfinished). Whatever a judge says, no program judge's pair prefers an unfinished answer over a finished
one (mlx_dpo.online.verdict.may_prefer).

A bad spec or a judge that misbehaves (raises, returns a bool, NaN, a string, 3...) raises MlxDpoError:
one line naming the spec and what is wrong, before anything is stored.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.online import rewards
from mlx_dpo.online.llm_judge import LlmJudge
from mlx_dpo.online.verdict import Choice, Judge, Messages, Prompt, Verdict, check_lengths, is_finished
from mlx_dpo.settings import OnlineSettings

__all__ = ["Judge", "Prompt", "Verdict", "load_judge", "LlmJudge", "ScoreJudge", "PreferJudge", "HumanJudge"]


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _CallableJudge(Judge):
    def __init__(self, kind: str, spec: str, fn: Callable[..., Any]) -> None:
        self.kind, self.spec, self.fn = kind, spec, fn
        self.name = f"{kind}:{spec}"

    def _call(self, *args: Any) -> Any:
        try:
            return self.fn(*args)
        except Exception as e:  # the user's code: name it, do not show our traceback
            raise MlxDpoError(f"judge {self.spec} raised {_one_line(e)}") from None


class ScoreJudge(_CallableJudge):
    def __init__(self, spec: str, fn: Callable[[str, str], float], missing_end_penalty: float = 0.0) -> None:
        super().__init__("score", spec, fn)
        self.missing_end_penalty = float(missing_end_penalty)

    def raw_score(self, prompt: Messages, answer: str) -> float:
        """The function's own score (the held-out score), whether or not the answer finished."""
        value = self._call(Prompt(prompt), answer)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MlxDpoError(f"judge {self.spec} returned {value!r}; a score judge must return a finite number")
        return float(value)

    def score(self, prompt: Messages, answer: str) -> float:
        """The function's score, less `missing_end_penalty` for an answer cut at max tokens (comparisons)."""
        return self.raw_score(prompt, answer) - (0.0 if is_finished(answer) else self.missing_end_penalty)

    def judge(self, prompts: list[Messages], pairs: list[tuple[str, str]]) -> list[Verdict]:
        check_lengths(self, prompts, pairs)
        verdicts = []
        for prompt, (a, b) in zip(prompts, pairs):
            s1, s2 = self.score(prompt, a), self.score(prompt, b)
            choice = 1 if s1 > s2 else 2 if s2 > s1 else 0
            verdicts.append(Verdict(choice, (s1, s2), f"scores {s1:.3g} vs {s2:.3g}"))
        return verdicts


class PreferJudge(_CallableJudge):
    def __init__(self, spec: str, fn: Callable[[str, str, str], Choice]) -> None:
        super().__init__("prefer", spec, fn)

    def judge(self, prompts: list[Messages], pairs: list[tuple[str, str]]) -> list[Verdict]:
        check_lengths(self, prompts, pairs)
        verdicts = []
        for prompt, (a, b) in zip(prompts, pairs):
            value = self._call(Prompt(prompt), a, b)
            if value is not None and (isinstance(value, bool) or value not in (0, 1, 2)):
                raise MlxDpoError(
                    f"judge {self.spec} returned {value!r}; a prefer judge must return 1, 2, 0 (a tie) or None (skip)"
                )
            verdicts.append(Verdict(None if value is None else int(value)))
        return verdicts


class HumanJudge(Judge):
    """A person, in the app. It records pairs itself, so nothing calls `judge()` on it."""

    name = "human"
    kind = "human"

    def judge(self, prompts: list[Messages], pairs: list[tuple[str, str]]) -> list[Verdict]:
        raise MlxDpoError("the human judge is the app: `--judge human` opens it; it cannot be asked in a batch")


# --- turning a spec into a callable ---------------------------------------------------------------------------


def _import_file(spec: str, path: Path):
    if not path.is_file():
        raise MlxDpoError(f"judge {spec}: file {path} not found")
    name = f"mlx_dpo_judge_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise MlxDpoError(f"judge {spec}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling in the user's file look their module up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise MlxDpoError(f"judge {spec}: importing {path} raised {_one_line(e)}") from None
    return module


def _import_module(spec: str, module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise MlxDpoError(
                f"judge {spec}: no module named {module_name!r} (a file needs its path ending in .py)"
            ) from None
        raise MlxDpoError(f"judge {spec}: importing {module_name} raised {_one_line(e)}") from None
    except Exception as e:
        raise MlxDpoError(f"judge {spec}: importing {module_name} raised {_one_line(e)}") from None


def _find(spec: str) -> Callable[..., Any]:
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise MlxDpoError(f"judge {spec!r}: expected path/to/file.py:NAME, module:NAME, llm:MODEL or human")
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    obj: Any = _import_file(spec, Path(where).expanduser()) if is_file else _import_module(spec, where)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MlxDpoError(f"judge {spec}: {where} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise MlxDpoError(f"judge {spec}: {attr} is a {type(obj).__name__}, not a function")
    return obj


def callable_kind(spec: str, fn: Callable[..., Any]) -> str:
    """ "score" for a callable taking (prompt, answer), "prefer" for (prompt, answer_1, answer_2)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise MlxDpoError(f"judge {spec}: its signature cannot be read; wrap it in a def") from None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        raise MlxDpoError(
            f"judge {spec}: takes *args, so its kind is unclear; name its parameters: "
            "(prompt, answer) for a score, (prompt, answer_1, answer_2) for a preference"
        )
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    needed = [p for p in positional if p.default is p.empty]
    keyword_needed = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    count = len(needed)
    if keyword_needed or count not in (2, 3):
        if len(positional) in (2, 3) and not keyword_needed:
            count = len(positional)  # e.g. score(prompt, answer=""): callable with two arguments
        else:
            raise MlxDpoError(
                f"judge {spec}: takes {len(needed)} required argument(s); a judge takes "
                "(prompt, answer) -> score or (prompt, answer_1, answer_2) -> 1|2|0|None"
            )
    return "score" if count == 2 else "prefer"


def read_rubric(rubric: str) -> str:
    """`--rubric TEXT|FILE`: an existing file's contents, else the text itself."""
    path = Path(rubric).expanduser()
    if "\n" not in rubric and len(rubric) < 4096 and path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise MlxDpoError(f"--rubric {rubric}: the file is empty")
        return text
    if "\n" not in rubric and " " not in rubric.strip() and path.suffix in (".txt", ".md"):
        raise MlxDpoError(f"--rubric {rubric}: file not found")
    if not rubric.strip():
        raise MlxDpoError("--rubric is empty")
    return rubric.strip()


def load_judge(spec: str, *, rubric: str | None = None, missing_end_penalty: float | None = None) -> Judge:
    """The Judge a `--judge SPEC` names (see the module docstring); `rubric` only for `llm:` judges;
    `missing_end_penalty` for score judges (None: the setting's default)."""
    spec = spec.strip()
    if spec.startswith("llm:"):
        model = spec[len("llm:") :].strip()
        if not model:
            raise MlxDpoError("judge llm: needs a model, e.g. llm:default or llm:path/to/mlx-model")
        return LlmJudge(model, read_rubric(rubric) if rubric is not None else None)
    if rubric is not None:
        raise MlxDpoError(f"--rubric is for llm:MODEL judges, not {spec}")
    if spec == "human":
        return HumanJudge()
    fn = rewards.parse(spec) if spec.startswith(rewards.PREFIX) else _find(spec)
    if callable_kind(spec, fn) == "prefer":
        return PreferJudge(spec, fn)
    penalty = OnlineSettings().missing_end_penalty if missing_end_penalty is None else missing_end_penalty
    return ScoreJudge(spec, fn, penalty)
