"""The Label screen's rating mode (m): a person rates a group of answers, the same ratings give the expected DPO pair
and KTO labels, the Data screen's ratings view changes one, and a GRPO round trains on them from the Train screen."""

from __future__ import annotations

import pytest
from helpers import model_ready, type_text, wait_until, warnings
from textual.widgets import DataTable, Input

from mlx_dpo.data.rating_labels import rating_feedback, rating_pairs
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.events import RoundEnded
from tui.app import MlxDpoApp
from tui.workers import SampleSettings

pytestmark = pytest.mark.anyio

SIZE = (140, 44)
FAST = SampleSettings(max_tokens=12, temperature=1.0)
GRPO_ROUND = {
    "train-method": "grpo",
    "train-iters": "2",
    "train-batch": "2",
    "train-rank": "4",
    "train-layers": "2",
    "train-lr": "1e-4",
}


async def test_rate_four_answers_train_a_grpo_round_on_them_and_see_the_new_version(tmp_path, tiny):
    workspace = tmp_path / "ws"
    app = MlxDpoApp(workspace, model=str(tiny), settings=FAST, train_settings={"accept": "always"})
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        label = app.get_screen("label")
        await pilot.press("escape", "m")  # out of the prompt editor, into the rating mode
        panel = label.query_one("#ratings")
        assert panel.display and not label.query_one("#answers").display
        await pilot.press("enter")  # nothing sampled yet: nothing to save
        assert any("Rate every answer" in w for w in warnings(app))
        await pilot.press("p")
        await type_text(pilot, "Name a fruit.")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: len(panel.done) == 4 and all(panel.done), timeout=120, what="four answers")
        await pilot.press("5", "1", "4", "b")  # b: bad, stored as 1
        assert panel.ratings == [5, 1, 4, 1]
        await pilot.press("up", "3", "2", "enter")  # back to answer 3: rated 3, then on to answer 4: rated 2
        await wait_until(pilot, lambda: panel.saved is not None, what="the ratings saved")
        [group] = app.store.ratings.groups(rater="human")
        assert group.rewards == [5, 1, 3, 2] and group.answers == panel.answers
        assert {r.version for r in group.ratings} == {"base"} and all(r.sampler for r in group.ratings)
        # The same ratings as DPO's pair (best over worst) and KTO's labels (good from 4 up).
        [pair] = rating_pairs([group])
        assert (pair.chosen, pair.rejected) == (group.answers[0], group.answers[1])
        assert [f.desirable for f in rating_feedback([group], 4)] == [True, False, False, False]

        # The Data screen's ratings view: answer 3 (rated 3) rated 4 instead; then the ratings as pairs and labels.
        await pilot.press("f3", "g")
        table = app.screen.query_one("#ratings-table", DataTable)
        assert table.row_count == 4
        table.move_cursor(row=2)
        await pilot.press("4")
        assert app.store.ratings.groups()[0].rewards == [5, 1, 4, 2]
        await pilot.press("l")
        assert [(p.chosen, p.rejected) for p in app.store.list_pairs()] == [(group.answers[0], group.answers[1])]
        assert [f.desirable for f in app.store.list_feedback()] == [True, False, True, False]
        await pilot.press("escape", "f4")
        train = app.get_screen("train")
        for input_id, value in GRPO_ROUND.items():
            train.query_one(f"#{input_id}", Input).value = value
        await pilot.pause()
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: train.last_round is not None, timeout=240, what="the round to end")
        assert isinstance(train.last_round, RoundEnded) and train.last_round.version == 1, train.last_round
        await model_ready(pilot)
        assert app.current_version_label() == "v1"
        rows = [
            train.query_one("#versions", DataTable).get_row_at(i)[0]
            for i in range(train.query_one("#versions", DataTable).row_count)
        ]
        assert any("v1" in str(row) for row in rows)
    with PreferenceStore(workspace) as store:
        [round_] = store.list_rounds()
        assert round_.settings["method"] == "grpo" and round_.decision == "accepted"
        assert store.ratings.round_ids(1) == group.ids and store.ratings.untrained() == []
