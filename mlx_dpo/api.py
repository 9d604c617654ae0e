"""The Python API: the one surface that the command line, the app and user code import.

    import threading, mlx_dpo.api as api
    result = api.train("pairs.jsonl", iters=50, beta=0.1, lora_rank=8, on_event=print, cancel=threading.Event())
    print(api.evaluate("valid.jsonl", adapter_path=result.adapter_path))

Two kinds of name live here:

- data and rules that need no model (the store, the pair checks, prompt files, answers): imported with this
  module, which loads no mlx, so the app's screens use them on the UI thread;
- the library's work (train, run a round, sample, load a model, export; their result types): each resolved
  from its module (`LAZY`) the first time it is asked for, so mlx and mlx-lm load then, on the asking thread.
  The app's workers ask on their own threads (MLX streams are thread-local); tests/test_layout.py keeps
  the app's other modules off these names.

A model is loaded once into a session (`load_model` -> `ModelSession`, mlx_dpo/models/session.py: the model,
which adapter is on it, and what its self-checks found) that every call taking `loaded=` shares:

    session = api.load_model("my-model")
    with session.adapter("adapters/v2"):     # v2 on for the block; the version on before comes back after it
        print(api.sample_answers(session, [[{"role": "user", "content": "Hi"}]], api.SampleSettings()).answers)

The work itself lives in the library's packages (`training/run.py` for a run, `training/rounds.py` for a
round, `online/` for online rounds, `models/` for loading and sampling, `export/`); the events a run reports
are `mlx_dpo.events`, the settings `mlx_dpo.settings`, the one error type `mlx_dpo.errors.MlxDpoError`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlx_dpo.data.answers import Answer, is_finished
from mlx_dpo.data.contradictions import find_contradictions
from mlx_dpo.data.online_records import HUMAN_JUDGE, check_provenance
from mlx_dpo.data.pairs import IDENTICAL_ANSWERS, TWO_DIFFERENT_ANSWERS, Problem, pair_problem, same_answers
from mlx_dpo.data.prompt_file import PromptFileError, read_prompt_file
from mlx_dpo.data.rating_labels import add_rating_labels, rating_feedback, rating_pairs
from mlx_dpo.data.rating_records import RatedGroup, StoredRating
from mlx_dpo.data.store import Candidate, PreferenceStore, StoredPair, UndoResult
from mlx_dpo.group_settings import GroupSettings
from mlx_dpo.names import display_name, is_default
from mlx_dpo.online.verdict import Judge, Verdict
from mlx_dpo.settings import SampleSettings

if TYPE_CHECKING:  # what `LAZY` resolves, for type checkers and editors
    from mlx_dpo.export import ExportResult, export
    from mlx_dpo.export.push import push_folder
    from mlx_dpo.models.generate import stream_answer, template_note
    from mlx_dpo.models.load import load_model, resolve_model_path
    from mlx_dpo.models.session import ModelSession
    from mlx_dpo.online.judges import load_judge
    from mlx_dpo.online.loop import RoundReport
    from mlx_dpo.online.sampling import Samples, sample_answers
    from mlx_dpo.training.review import ReviewReport, review_pairs
    from mlx_dpo.training.rounds import RoundResult, run_round
    from mlx_dpo.training.run import TrainResult, evaluate, train

# The heavy names: name -> the module defining it, imported on first use (PEP 562 `__getattr__` below).
LAZY = {
    "train": "mlx_dpo.training.run",
    "evaluate": "mlx_dpo.training.run",
    "TrainResult": "mlx_dpo.training.run",
    "run_round": "mlx_dpo.training.rounds",
    "RoundResult": "mlx_dpo.training.rounds",
    "review_pairs": "mlx_dpo.training.review",
    "ReviewReport": "mlx_dpo.training.review",
    "RoundReport": "mlx_dpo.online.loop",
    "sample_answers": "mlx_dpo.online.sampling",
    "Samples": "mlx_dpo.online.sampling",
    "load_judge": "mlx_dpo.online.judges",
    "load_model": "mlx_dpo.models.load",
    "ModelSession": "mlx_dpo.models.session",
    "resolve_model_path": "mlx_dpo.models.load",
    "stream_answer": "mlx_dpo.models.generate",
    "template_note": "mlx_dpo.models.generate",
    "export": "mlx_dpo.export",
    "ExportResult": "mlx_dpo.export",
    "push_folder": "mlx_dpo.export.push",
}

# Everything above and in LAZY (tests/test_layout.py checks LAZY is all here).
__all__ = [
    "Answer",
    "Candidate",
    "ExportResult",
    "GroupSettings",
    "RatedGroup",
    "StoredRating",
    "add_rating_labels",
    "rating_feedback",
    "rating_pairs",
    "HUMAN_JUDGE",
    "IDENTICAL_ANSWERS",
    "Judge",
    "ModelSession",
    "PreferenceStore",
    "Problem",
    "PromptFileError",
    "ReviewReport",
    "RoundReport",
    "RoundResult",
    "SampleSettings",
    "Samples",
    "StoredPair",
    "TWO_DIFFERENT_ANSWERS",
    "TrainResult",
    "UndoResult",
    "Verdict",
    "check_provenance",
    "converts_on_load",
    "display_name",
    "evaluate",
    "export",
    "find_contradictions",
    "is_default",
    "is_finished",
    "load_judge",
    "load_model",
    "pair_problem",
    "push_folder",
    "read_prompt_file",
    "resolve_model_path",
    "review_pairs",
    "run_online",
    "run_round",
    "same_answers",
    "sample_answers",
    "stream_answer",
    "template_note",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY[name]), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY))


def run_online(
    workspace: str | Path, prompts: str | Path, judge: str, *, rubric: str | None = None, **options: Any
) -> list[RoundReport]:
    """Online rounds on `prompts` judged by `judge` (a SPEC: "file.py:NAME", "module:NAME", "llm:MODEL"):
    see mlx_dpo.online.loop.run_online for `options` (model, online, eval_prompts, sample_settings, settings,
    on_event, on_round). A restart goes on where the last run on this workspace and file stopped. A score judge
    takes its missing-end penalty from `online` (OnlineSettings.missing_end_penalty)."""
    from mlx_dpo.online import judges, loop

    penalty = options["online"].missing_end_penalty if options.get("online") is not None else None
    return loop.run_online(
        workspace, prompts, judges.load_judge(judge, rubric=rubric, missing_end_penalty=penalty), **options
    )


def converts_on_load(spec: str | None) -> bool:
    """Whether loading `spec` (a --model value; None: the default) converts a GGUF file for MLX first: its first
    load, which takes longer and is worth saying so. False when that cannot be told."""
    from mlx_dpo.models.load import converted_dir, default_gguf

    try:
        if is_default(spec) or spec.lower().endswith(".gguf"):
            gguf = default_gguf() if is_default(spec) else Path(spec).expanduser()
            return gguf.is_file() and not (converted_dir(gguf) / "config.json").is_file()
    except Exception:
        return False
    return False
