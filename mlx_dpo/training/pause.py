"""A test hook: hold a run after a given step, so a test can kill it at a step it knows.

    MLX_DPO_PAUSE_AT_STEP=5 MLX_DPO_PAUSE_FILE=/tmp/x mlx-dpo train ...

After step 5 is done (reported, evaluated, checkpointed if due) the run writes `/tmp/x.reached` and waits
until `/tmp/x` exists, then carries on. A test that kills the run after seeing the `.reached` file kills it
at exactly that point, however fast or slow the machine (tests/test_train_cli.py). Unset, it costs one
dictionary lookup per step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT_STEP = "MLX_DPO_PAUSE_AT_STEP"
PAUSE_FILE = "MLX_DPO_PAUSE_FILE"


def pause_if_asked(step: int) -> None:
    """Wait at `step` while the environment asks for it (see the module docstring)."""
    at = os.environ.get(PAUSE_AT_STEP)
    if at is None or int(at) != step:
        return
    release = Path(os.environ[PAUSE_FILE])
    Path(f"{release}.reached").write_text(str(step))
    while not release.exists():
        time.sleep(0.01)
