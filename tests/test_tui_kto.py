"""KTO from the app: one sampled answer marked bad with one key, a KTO round trains it, the version is recorded."""

from __future__ import annotations

import pytest
from helpers import model_ready, sample_answers, wait_until
from textual.widgets import Input

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.events import RoundEnded
from tui.app import MlxDpoApp
from tui.workers import SampleSettings

pytestmark = pytest.mark.anyio

SIZE = (140, 44)
TINY_SEED = 41


async def test_mark_one_answer_bad_then_a_kto_round_trains_it(tmp_path, tiny):
    workspace = tmp_path / "ws"
    with PreferenceStore(workspace) as store:  # pairs train alongside the mark, each as a good and a bad answer
        for i in range(2):
            store.add_pair([{"role": "user", "content": f"question {i}"}], f"a good answer {i}", f"bad {i}")
    app = MlxDpoApp(workspace, model=str(tiny), settings=SampleSettings(max_tokens=8, temperature=1.0))
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        label = app.get_screen("label")
        first, _ = await sample_answers(pilot, "Is this answer any good?", timeout=120)
        await pilot.press("b")
        [mark] = app.store.list_feedback()
        assert (mark.completion, mark.desirable) == (first, False)
        assert mark.prompt[-1] == {"role": "user", "content": "Is this answer any good?"}
        assert label.state == "labeled"

        await pilot.press("f4")
        train = app.get_screen("train")
        for input_id, value in {
            "train-loss": "kto",
            "train-iters": "1",
            "train-batch": "2",
            "train-rank": "4",
            "train-layers": "2",
        }.items():
            train.query_one(f"#{input_id}", Input).value = value
        await pilot.pause()
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: train.last_round is not None, timeout=600, what="the KTO round")
        assert isinstance(train.last_round, RoundEnded), train.last_round
        [round_] = app.store.list_rounds()
        assert (round_.version, round_.status, round_.settings["loss_type"]) == (1, "finished", "kto")
        assert app.store.round_feedback_ids(1) == [mark.id] and len(round_.pair_ids) == 2
        assert "kl" in round_.metrics and round_.metrics["new_feedback"] == 1
        assert app.store.untrained_feedback() == []
