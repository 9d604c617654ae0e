"""The Python API: train an adapter, evaluate one, or train one incremental round on a workspace.

    import threading, mlx_dpo.api as api
    result = api.train("pairs.jsonl", iters=50, beta=0.1, lora_rank=8, on_event=print, cancel=threading.Event())
    print(api.evaluate("valid.jsonl", adapter_path=result.adapter_path))

The work itself lives in `mlx_dpo.training` (`run.py` for a run, `rounds.py` for a round); this module
is the stable surface that the CLI, the app and user code import.
"""

from mlx_dpo.training.rounds import RoundResult, run_round
from mlx_dpo.training.run import TrainResult, evaluate, train

__all__ = ["RoundResult", "TrainResult", "evaluate", "run_round", "train"]
