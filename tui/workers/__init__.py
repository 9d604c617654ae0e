"""The app's side of its boundary with the library: the workers that load models, sample, train and export.

- `thread.ThreadWorker`: the one base of the worker threads below (queue, stop, reports on the worker's thread).
- `model.ModelWorker`: a daemon thread that owns the loaded model (load, sample, compare, switch adapters,
  review labels); it reports the plain dataclasses of `events` through a callback on its own thread.
- `judge.JudgeWorker`: a program judge (`--judge SPEC`) on a thread of its own, for the Label screen's
  suggestions (an `llm:` judge loads a model, which then stays on that thread).
- `training.TrainingProcess`: one training round in a child process; it reports the round's events (the
  `mlx_dpo.events` dataclasses, pickled across the process boundary and rebuilt as the same classes).
- `export`: the Export screen's export and push calls, run on a Textual thread worker.

The whole app imports the library through `mlx_dpo.api` (and its event, settings, metric-name and error
modules); only these workers use the API's heavy names (train, load_model, stream_answer, export, ...), which
load mlx and mlx_lm the first time they are used: on the worker thread or in the child process, so the first
screen never waits for them (tests/test_layout.py). Nothing here imports Textual either: the training child
process imports this package (to find its entry point) and should not pay for a UI it does not have.
"""

from tui.workers.model import ModelWorker, SampleSettings
from tui.workers.training import TrainingProcess

__all__ = ["ModelWorker", "SampleSettings", "TrainingProcess"]
