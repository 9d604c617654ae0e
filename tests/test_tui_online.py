"""The app in the online loop, driven with keys through Pilot against the real store: the Label screen's random
A/B order, judged pairs in the Data screen with their judge, a person overruling a judge, a program judge's
suggestion accepted with one key, the prompt file and the rounds of `online --judge human`, the Data screen's
review view, and the Train screen's held-out numbers per version.

Tests about the screens use `ScriptedWorker`: the real model worker (its thread, queue, events and streaming),
whose model is replaced by text made from the seed, so no MLX model is loaded. One test samples from the real
tiny model through the real worker.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import errors, model_ready, sample_answers, type_text, wait_until, warnings

from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import RoundEnded, RoundFailed
from tui.app import MlxDpoApp
from tui.messages import WorkerEvent
from tui.sampling import shown_order
from tui.workers import ModelWorker, SampleSettings
from tui.workers.events import AnswerDone, ReviewDone, ReviewFailed

pytestmark = pytest.mark.anyio

SIZE = (120, 36)
JUDGE = "score:judges.py:longer"  # the name the store records for the test's score judge


def scripted_answer(seed: int) -> str:
    """What the scripted model answers with this seed: its length differs from the next seed's."""
    return f"seed {seed}:" + " word" * (seed % 7 + 1)


class ScriptedWorker(ModelWorker):
    """The real model worker with the model replaced: answers are `scripted_answer(seed)`, streamed in two
    pieces, and a review returns `self.report` (set by the test)."""

    report = None

    def _load(self):
        return SimpleNamespace(name="scripted", adapter_path=None)

    def _stream(self, loaded, request, seed):
        text = scripted_answer(seed)
        return iter([text[:6], text[6:]])

    def _review(self, loaded, request):
        return self.report


class CutStream:
    """A scripted answer stream that, like mlx-lm's, knows afterwards whether the answer finished."""

    def __init__(self, pieces: list[str], finished: bool) -> None:
        self.pieces, self.finished = pieces, finished

    def __iter__(self):
        return iter(self.pieces)


class CuttingWorker(ScriptedWorker):
    """Answers with an odd seed stop at max tokens (unfinished); even seeds finish."""

    def _stream(self, loaded, request, seed):
        text = scripted_answer(seed)
        return CutStream([text[:6], text[6:]], finished=seed % 2 == 0)


@pytest.fixture
def make_app(workspace):
    def make(**kwargs) -> MlxDpoApp:
        kwargs.setdefault("settings", SampleSettings(max_tokens=12, seed=0))
        kwargs.setdefault("worker_factory", ScriptedWorker)
        return MlxDpoApp(workspace, model="scripted", **kwargs)

    return make


@asynccontextmanager
async def started(app: MlxDpoApp):
    async with app.run_test(size=SIZE) as pilot:
        await model_ready(pilot)
        yield pilot


def cells(screen, pair_id: int) -> dict[str, str]:
    """The Data table's row of one pair, by column name."""
    table = screen.query_one("#pairs")
    return {str(col.label): str(cell) for col, cell in zip(table.ordered_columns, table.get_row(str(pair_id)))}


# --- Label: random A/B order --------------------------------------------------------------------------------


def test_both_orders_are_drawn_over_seeds_and_each_seed_always_draws_the_same():
    orders = [shown_order((seed, seed + 1)) for seed in range(200)]
    assert set(orders) == {(1, 2), (2, 1)}
    assert 60 <= orders.count((2, 1)) <= 140  # about half; fixed values, so this cannot flake
    assert orders == [shown_order((seed, seed + 1)) for seed in range(200)]


async def test_answers_are_shown_in_random_order_and_the_pair_records_it(tiny, workspace):
    """The real tiny model through the real worker: over a few requests both orders occur; the pane shows the
    worker's slot that the order says, and the pair saved is what the person saw, with `shown_first`."""
    done: list[AnswerDone] = []

    def recording(model, adapter, report):
        return ModelWorker(model, adapter, lambda e: (done.append(e) if isinstance(e, AnswerDone) else None, report(e)))

    app = MlxDpoApp(workspace, model=str(tiny), settings=SampleSettings(max_tokens=8, seed=1), worker_factory=recording)
    seen: dict[tuple[int, int], tuple[int, int, tuple[str, str]]] = {}  # order -> (pair id, pane picked, shown)
    async with started(app) as pilot:
        screen = app.get_screen("label")
        await sample_answers(pilot, "Name a colour.")
        for n in range(12):
            order = screen.sampling.order
            assert order == shown_order(screen.sampling.seeds)
            by_slot = {e.slot: e.text for e in done if e.request_id == screen.request_id}
            assert screen.answers() == (by_slot[order[0]], by_slot[order[1]])
            if order not in seen and not screen.sampling.identical:
                pane = 1 + n % 2  # pick either pane
                await pilot.press(str(pane))
                assert screen.state == "labeled"
                seen[order] = (int(screen.status_text.split("#")[1].split()[0]), pane, screen.answers())
            if len(seen) == 2:
                break
            await pilot.press("r")  # the next pair of seeds
            await wait_until(pilot, lambda: screen.state == "ready", what="resampled answers")
    assert set(seen) == {(1, 2), (2, 1)}, "both orders within 12 requests"
    with PreferenceStore(workspace) as store:
        for pair_id, pane, shown in seen.values():
            pair = store.get_pair(pair_id)
            assert (pair.chosen, pair.rejected) == (shown[pane - 1], shown[2 - pane])
            assert pair.shown_first == ("chosen" if pane == 1 else "rejected")
            assert pair.judge is None and pair.version == "base" and pair.origin == "sampled"


# --- Data: judged pairs, overruling a judge -------------------------------------------------------------------


def judged_store(workspace: Path) -> tuple[int, int, int]:
    with PreferenceStore(workspace) as store:
        person = store.add_pair("Name a colour.", "Blue.", "Colours are hard.", origin="sampled", label=False)
        judged = store.add_pair(
            "Say hi.",
            "Hi there, friend!",
            "Hi.",
            origin="sampled",
            label=False,
            judge=JUDGE,
            version="v1",
            shown_first="rejected",
        )
        imported = store.add_pair("2+2?", "4", "5", origin="imported", label=False)
    return person.id, judged.id, imported.id


async def test_judged_pairs_show_their_judge_and_a_person_overrules_one(make_app, workspace):
    person, judged, imported = judged_store(workspace)
    app = make_app()
    async with started(app) as pilot:
        await pilot.press("f3")
        screen = app.screen
        assert cells(screen, judged)["judge"] == "score:longer" and cells(screen, person)["judge"] == "human"
        assert cells(screen, imported)["judge"] == ""  # nobody known
        await pilot.press("f", "f", "f")  # train, valid, then the program-judged pairs only
        assert screen.view == "judged" and screen.pair_ids == [judged]
        await pilot.press("o")  # overrule the judge: one key
        await wait_until(pilot, lambda: app.store.get_pair(judged).judge is None, what="the overrule")
        assert screen.pair_ids == [judged]  # still listed: a judge chose it first
        assert cells(screen, judged)["judge"] == "human (overruled score:longer)"
        await pilot.press("f")  # all pairs again; the person's own pair has no judge to overrule
        await pilot.press("ctrl+end")
        assert screen.current_id() == person
        await pilot.press("o")
        assert any("nothing to overrule" in w for w in warnings(app))
    with PreferenceStore(workspace) as store:
        pair = store.get_pair(judged)
        untouched = store.get_pair(person)
    assert (pair.chosen, pair.rejected) == ("Hi.", "Hi there, friend!")
    assert pair.judge is None and pair.overruled == JUDGE and pair.shown_first == "chosen"
    assert (untouched.chosen, untouched.judge) == ("Blue.", None)


# --- Label: a program judge's suggestion ----------------------------------------------------------------------


@pytest.fixture
def judge_file(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # the spec is relative: the name the store records is the same in every run
    Path("judges.py").write_text("def longer(prompt, answer):\n    return len(answer)\n")
    return "judges.py:longer"


async def test_a_program_judges_suggestion_is_accepted_with_one_key(make_app, workspace, judge_file):
    app = make_app(judge=judge_file, settings=SampleSettings(max_tokens=12, seed=2))
    picked: list[int] = []
    async with started(app) as pilot:
        screen = app.get_screen("label")
        await wait_until(pilot, lambda: app.judge_name == JUDGE, what="the judge")
        line = screen.query_one("#suggestion")
        await type_text(pilot, "Say something.")
        for key in ("ctrl+s", "r"):  # seeds 2 and 4: the longer answer is shown in pane 2, then in pane 1
            await pilot.press(key)
            await wait_until(pilot, lambda: screen.state == "ready", what="both answers")
            first, second = screen.answers()
            await wait_until(pilot, lambda: screen.suggestion is not None, what="the suggestion")
            better = 1 if len(first) > len(second) else 2
            assert screen.suggestion.choice == better
            assert str(line.render()) == f"judge {JUDGE} prefers answer {better} · a accept" and line.display
            picked.append(better)
            await pilot.press("a")  # accept it: one key
            assert screen.state == "labeled" and not line.display
            pair_id = int(screen.status_text.split("#")[1].split()[0])
            pair = app.store.get_pair(pair_id)
            assert pair.chosen == max(first, second, key=len) and pair.rejected == min(first, second, key=len)
            assert pair.judge is None and pair.note == f"suggested by the judge {JUDGE}"
            assert pair.shown_first == ("chosen" if better == 1 else "rejected")
        await pilot.press("n", "escape", "a")  # no answers, so no suggestion to accept
        assert any("No suggestion" in w for w in warnings(app))
        assert app.pair_counts[0] == 2
    assert picked == [2, 1]


async def test_a_bad_judge_spec_is_reported_and_labeling_goes_on(make_app, workspace, tmp_path):
    app = make_app(judge=str(tmp_path / "missing.py:score"))
    async with started(app) as pilot:
        await wait_until(pilot, lambda: app.judge is None, what="the judge's failure")
        assert any("missing.py" in e for e in errors(app)) and app.model_state == "ready"
        await pilot.press("escape", "a")  # labeling goes on, without suggestions
        assert any("No judge suggests anything" in w for w in warnings(app))


# --- the prompt file of `online --judge human` ----------------------------------------------------------------


async def test_a_prompt_file_given_at_start_is_the_queue_from_its_first_unlabeled_prompt(make_app, workspace, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ("one", "two", "three")) + "\n")
    with PreferenceStore(workspace) as store:
        store.add_pair("one", "a", "b", label=False)  # labeled in an earlier session
    app = make_app(prompts=prompts)
    async with started(app) as pilot:
        screen = app.get_screen("label")
        assert screen.query_one("#prompt").text == "two" and "2/3" in str(screen.query_one("#queue-status").render())
        await wait_until(pilot, lambda: screen.state == "ready", what="the queued prompt's answers")
        await pilot.press("2")
        assert screen.query_one("#prompt").text == "three"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    with pytest.raises(MlxDpoError, match="bad.jsonl:2"):
        make_app(prompts=bad)


async def test_after_every_k_labels_the_app_trains_a_round_with_the_loops_settings(workspace, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\nthree\nfour\n")
    app = MlxDpoApp(
        workspace,
        model="scripted",
        settings=SampleSettings(max_tokens=12, seed=0),
        worker_factory=ScriptedWorker,
        prompts=prompts,
        per_round=2,
        train_settings={"learning_rate": 1e-4, "passes": 3, "heldout_samples": 0},
    )
    app.rounds_started = []

    def start_training(settings, report):  # no training child here: the round is recorded and ends at once
        app.rounds_started.append(settings)
        report(RoundFailed("no training in this test"))
        return SimpleNamespace(running=False)

    app.start_training = start_training
    async with started(app) as pilot:
        screen = app.get_screen("label")
        for n in range(1, 4):
            await wait_until(pilot, lambda: screen.state == "ready", what=f"answers to prompt {n}")
            await pilot.press("1")
            await wait_until(pilot, lambda: app.current_mode == "label", what="the Label screen again")
        (first,) = app.rounds_started  # after the second label
        assert (first["learning_rate"], first["passes"], first["heldout_samples"]) == (1e-4, 3, 0)
        assert app.get_screen("train").query_one("#train-passes").value == "3"  # shown where they can be changed
        await pilot.press("1")  # the fourth label: the second round
        await wait_until(pilot, lambda: len(app.rounds_started) == 2, what="the second round")
    with pytest.raises(MlxDpoError, match="per-round"):
        MlxDpoApp(workspace, model="scripted", per_round=0)


# --- Data: the review view ------------------------------------------------------------------------------------


async def test_the_review_view_lists_disagreements_worst_first_and_fixes_them_with_one_key(make_app, workspace):
    from mlx_dpo.training.review import Contradiction, ReviewItem, ReviewReport

    with PreferenceStore(workspace) as store:
        ids = [store.add_pair(f"q{i}", f"good {i}", f"bad {i}", label=False).id for i in range(3)]
        reversed_ = store.add_pair("q0", "bad 0", "good 0", label=False).id  # q0 judged both ways
    items = [
        ReviewItem(ids[1], -3.0, -1.0, 2.0, "train"),
        ReviewItem(ids[0], -0.5, 0.1, 0.6, "train"),
        ReviewItem(reversed_, 0.5, 0.6, 0.1, "train"),
        ReviewItem(ids[2], 2.0, 1.0, -1.0, "train"),
    ]
    ScriptedWorker.report = ReviewReport(
        Path("adapters/v1"),
        "v1",
        0.1,
        items,
        [Contradiction("reversed", (ids[0], reversed_), ("good 0", "bad 0"), [{"role": "user", "content": "q0"}])],
    )
    app = make_app()
    try:
        async with started(app) as pilot:
            await pilot.press("f3", "r")  # the review: one key
            screen = app.screen
            await wait_until(pilot, lambda: screen.review is not None, what="the review")
            assert screen.view == "review" and screen.pair_ids == [ids[1], ids[0], reversed_, ids[2]]
            assert [cells(screen, i)["margin"] for i in screen.pair_ids] == ["-3.00", "-0.50", "+0.50", "+2.00"]
            assert cells(screen, ids[0])["flag"] == cells(screen, reversed_)["flag"] == "⚠ both"
            assert "1 contradiction(s)" in screen.query_one("#data-status").text
            await pilot.press("s")  # the worst one swapped: its margin is the same number negated
            assert (app.store.get_pair(ids[1]).chosen, cells(screen, ids[1])["margin"]) == ("bad 1", "+3.00")
            await pilot.press("down", "delete", "y")  # one side of the contradiction deleted: no contradiction
            assert screen.pair_ids == [ids[1], reversed_, ids[2]] and cells(screen, reversed_)["flag"] == ""
            assert "contradiction" not in screen.query_one("#data-status").text
            await pilot.press("enter")  # edit: the margin is stale until the next review
            app.screen.query_one("#pair-chosen").text = "good 0, edited"
            await pilot.press("ctrl+s")
            assert cells(screen, reversed_)["margin"] == "+0.50?"
    finally:
        ScriptedWorker.report = None


def test_the_model_worker_reviews_with_the_latest_round_and_puts_the_apps_version_back(tiny, workspace, tmp_path):
    """The real worker and the tiny model: the review (base alone as the reference, the round's adapter on top)
    scores every pair, and the model worker afterwards samples from the version the app had chosen (the base)."""
    import queue

    from helpers import make_adapter

    adapter = make_adapter(str(tiny), tmp_path / "v1")
    with PreferenceStore(workspace) as store:
        ids = [store.add_pair(f"Say {word}.", f"{word}!", "No.", label=False).id for word in ("hi", "yes", "ok")]
        store.record_round(1, adapter, {"model": str(tiny)}, {}, "finished", ids)
    events: queue.Queue = queue.Queue()

    def next_event(*kinds):
        while not isinstance(event := events.get(timeout=120), kinds):
            pass
        return event

    worker = ModelWorker(str(tiny), None, events.put)  # the app samples from the base; the review is v1's
    worker.start()
    settings = SampleSettings(max_tokens=6, seed=3)
    hello = [{"role": "user", "content": "Hello"}]
    try:
        worker.compare(hello, settings, (None, str(adapter)))  # the two versions answer differently
        base_answer, v1_answer = next_event(AnswerDone).text, next_event(AnswerDone).text
        worker.sample(hello, settings)
        before = next_event(AnswerDone).text
        request = worker.review(workspace)
        review = next_event(ReviewDone, ReviewFailed)
        worker.sample(hello, settings)
        after = next_event(AnswerDone).text
    finally:
        worker.stop(timeout=30)
    assert isinstance(review, ReviewDone) and review.request_id == request, review
    report = review.report
    assert report.version == "v1" and sorted(item.pair_id for item in report.items) == sorted(ids)
    margins = [item.margin for item in report.items]
    assert margins == sorted(margins) and all(m != 0 for m in margins)  # a real adapter: real disagreements
    assert before == base_answer != v1_answer
    assert after == before  # the review put v1 on; the base alone is back for sampling


# --- Train: held-out numbers per version ----------------------------------------------------------------------


async def test_the_train_screen_shows_held_out_numbers_per_version(make_app, workspace):
    with PreferenceStore(workspace) as store:
        ids = [store.add_pair(f"q{i}", "yes", "no", label=False).id for i in range(2)]
        store.record_round(
            1,
            "adapters/v1",
            {},
            {
                "loss": 0.6,
                "heldout/accuracy": 0.5,
                "heldout/kl": 0.0123,
                "heldout/score": None,
                "heldout_base/accuracy": 0.25,
                "heldout_base/kl": 0.0,
            },
            "finished",
            ids[:1],
        )
        store.record_round(
            2,
            "adapters/v2",
            {},
            {
                "loss": 0.5,
                "heldout/accuracy": 0.75,
                "heldout/kl": 0.05,
                "heldout/score": 0.4,
                "heldout/win_vs_previous": 0.6,
                "heldout/win_vs_base": 0.7,
            },
            "finished",
            ids,
        )
    app = make_app()
    async with started(app) as pilot:
        await pilot.press("f4")
        table = app.screen.query_one("#versions")
        rows = {key: [str(c) for c in table.get_row(key)][-9:-2] for key in ("base", "1", "2")}
    assert rows["base"] == ["0.25", "0.000", "–", "–", "–", "–", "–"]
    assert rows["1"] == ["0.50", "0.012", "–", "–", "–", "–", "–"]
    assert rows["2"] == ["0.75", "0.050", "0.400", "0.60", "0.70", "–", "–"]


async def test_a_rejected_version_says_why_is_not_switched_to_and_a_person_can_keep_it(make_app, workspace):
    """The versions table says whether each round was kept and why; a round the rule rejected leaves the app on
    the version it had, and `k` (or the command palette) keeps it anyway, recorded as a person's decision."""
    with PreferenceStore(workspace) as store:
        ids = [store.add_pair(f"q{i}", "yes", "no", label=False).id for i in range(2)]
        store.record_round(
            1,
            "adapters/v1",
            {},
            {"heldout/kl": 0.4, "heldout/repetition": 0.01, "heldout/unfinished": 0.25},
            "finished",
            ids[:1],
            "accepted",
            "KL 0.40 <= budget 3 nats",
        )
        store.record_round(
            2, "adapters/v2", {}, {"heldout/kl": 7.5}, "finished", ids, "rejected", "KL 7.50 > budget 3 nats"
        )
    app = make_app()
    async with started(app) as pilot:
        await pilot.press("f4")
        screen = app.screen
        table = screen.query_one("#versions")
        row = lambda key: [str(c) for c in table.get_row(key)]  # noqa: E731
        assert row("1")[-4:] == ["0.01", "0.25", "✓ yes", "KL 0.40 <= budget 3 nats"]
        assert row("2")[-2:] == ["✗ no", "KL 7.50 > budget 3 nats"]
        # A round that ends rejected, as the training child reports it: the app stays on its version.
        screen.post_message(
            WorkerEvent(
                RoundEnded(2, "finished", "adapters/v2", {}, decision="rejected", reason="KL 7.50 > budget 3 nats")
            )
        )
        await pilot.pause()
        assert warnings(app)[-1] == "Rejected: v2 not kept: KL 7.50 > budget 3 nats"
        assert app.current_version_label() == "base"  # not switched to v2
        table.focus()
        table.move_cursor(row=2)  # base, v1, v2
        await pilot.press("k")
        with PreferenceStore(workspace) as store:
            v2 = store.get_round(2)
        assert (v2.decision, v2.reason) == ("accepted", "kept by a person (the rule said: KL 7.50 > budget 3 nats)")
        assert row("2")[-2] == "✓ yes"
        titles = [c.title for c in app.get_system_commands(screen)]
        assert "Train: Keep the selected rejected version (accept it by hand)" in titles


async def test_an_answer_cut_at_max_tokens_is_marked_on_the_label_screen_and_stored_unfinished(make_app, workspace):
    app = make_app(worker_factory=CuttingWorker)  # seeds 0 and 1: one finished answer, one cut
    async with started(app) as pilot:
        screen = app.get_screen("label")
        await sample_answers(pilot, "Name a colour.")
        subtitles = {pane: str(screen.pane(pane).border_subtitle) for pane in (1, 2)}
        cut = next(pane for pane in (1, 2) if not screen.answers()[pane - 1].finished)
        assert subtitles[cut] == "done · unfinished: cut at max tokens" and subtitles[3 - cut] == "done"
        await pilot.press(str(cut))  # a person may prefer the cut answer: the rule binds program judges only
    with PreferenceStore(workspace) as store:
        [pair] = store.list_pairs()
    assert (pair.chosen.finished, pair.rejected.finished) == (False, True)
