"""A test hook: hold a run at a named point, so a test can kill it at a point it knows.

    MLX_DPO_PAUSE_AT=step:5 MLX_DPO_PAUSE_FILE=/tmp/x mlx-dpo train ...
    MLX_DPO_PAUSE_AT=online:judging:1 MLX_DPO_PAUSE_FILE=/tmp/x mlx-dpo online ...

At the point named, the run writes `/tmp/x.reached` and waits until `/tmp/x` exists, then carries on. A test
that kills the run after seeing the `.reached` file kills it at exactly that point, however fast or slow the
machine (tests/helpers.held_child). Unset, a point costs one dictionary lookup.

The points, in the order an online round meets them (a plain `train` meets the last three):
    online:sampling:<r>  round r's answers are about to be sampled; nothing of the round is stored yet
    online:judging:<r>   round r's first prompt is judged and stored, the others are not
    online:judged:<r>    round r's prompts are all judged and stored; it has not started training
    reference            a reference pass has computed and cached its first batch, not the others
    step:<n>             training step n is done (reported, evaluated, checkpointed if due)
    heldout              a round has finished and is recorded; its held-out measurement has not begun
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT = "MLX_DPO_PAUSE_AT"
PAUSE_FILE = "MLX_DPO_PAUSE_FILE"


def pause_at(point: str) -> None:
    """Wait at `point` while the environment asks for it (see the module docstring)."""
    if os.environ.get(PAUSE_AT) != point:
        return
    release = Path(os.environ[PAUSE_FILE])
    Path(f"{release}.reached").write_text(point)
    while not release.exists():
        time.sleep(0.01)
