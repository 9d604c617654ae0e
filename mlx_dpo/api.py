"""The Python API: train an adapter, evaluate one, or train one incremental round on a workspace.

    import threading, mlx_dpo.api as api
    result = api.train("pairs.jsonl", iters=50, beta=0.1, lora_rank=8, on_event=print, cancel=threading.Event())
    print(api.evaluate("valid.jsonl", adapter_path=result.adapter_path))

The work itself lives in `mlx_dpo.training` (`run.py` for a run, `rounds.py` for a round); this module
is the stable surface that the CLI, the app and user code import.
"""

from pathlib import Path
from typing import Any

from mlx_dpo.online import judges
from mlx_dpo.online.judges import Judge, Verdict, load_judge
from mlx_dpo.online.sampling import Samples, sample_answers
from mlx_dpo.online.loop import RoundReport, run_online as _run_online
from mlx_dpo.training.review import ReviewReport, review_pairs
from mlx_dpo.training.rounds import RoundResult, run_round
from mlx_dpo.training.run import TrainResult, evaluate, train

__all__ = ["Judge", "ReviewReport", "RoundReport", "RoundResult", "Samples", "TrainResult", "Verdict", "evaluate",
           "load_judge", "review_pairs", "run_online", "run_round", "sample_answers", "train"]


def run_online(workspace: str | Path, prompts: str | Path, judge: str, *, rubric: str | None = None,
               **options: Any) -> list[RoundReport]:
    """Online rounds on `prompts` judged by `judge` (a SPEC: "file.py:NAME", "module:NAME", "llm:MODEL"):
    see mlx_dpo.online.loop.run_online for `options` (model, online, eval_prompts, sample_settings, settings,
    on_event, on_round). A restart goes on where the last run on this workspace and file stopped. A score judge
    takes its missing-end penalty from `online` (OnlineSettings.missing_end_penalty)."""
    penalty = options["online"].missing_end_penalty if options.get("online") is not None else None
    return _run_online(workspace, prompts, judges.load_judge(judge, rubric=rubric, missing_end_penalty=penalty),
                       **options)
