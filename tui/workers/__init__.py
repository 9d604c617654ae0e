"""The app's one boundary with the library's heavy parts: the workers that load models, sample and train.

- `thread.ThreadWorker`: the one base of the worker threads below (queue, stop, reports on the worker's thread).
- `model.ModelWorker`: a daemon thread that owns the loaded model (load, sample, compare, switch adapters,
  review labels); it reports the plain dataclasses of `events` through a callback on its own thread.
- `judge.JudgeWorker`: a program judge (`--judge SPEC`) on a thread of its own, for the Label screen's
  suggestions (an `llm:` judge loads a model, which then stays on that thread).
- `training.TrainingProcess`: one training round in a child process; it reports the round's events as dicts.
- `export`: the Export screen's export and push calls, run on a Textual thread worker.

No other `tui` module imports more of `mlx_dpo` than its mlx-free parts (`errors`, `names`, `data`, `events`).
Here too, mlx and mlx_lm are imported only on the worker thread or in the child process, so the first
screen never waits for them. Nothing here imports Textual either: the training child process imports
this package (to find its entry point) and should not pay for a UI it does not have.
"""

from tui.workers.model import ModelWorker, SampleSettings
from tui.workers.training import TrainingProcess

__all__ = ["ModelWorker", "SampleSettings", "TrainingProcess"]
