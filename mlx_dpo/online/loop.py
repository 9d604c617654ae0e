"""Online rounds: the next prompts of a file -> two answers each from the latest version -> a judge -> the
store -> a training round -> held-out numbers -> a report; then again, from the version just trained.

    reports = run_online("ws", "prompts.txt", load_judge("mlx_dpo.online.demo_judges:one_sentence"), rounds=3)

What a caller can rely on:
- Every judged prompt is committed as it is judged, with its pair (or tie/skip) and its place in the prompt
  file, in one transaction (PreferenceStore.add_pair/add_skip with `online=`): a SIGKILL loses no judged pair.
- A restart goes on from where it stopped. `rounds` counts the rounds of this prompt file in this workspace,
  not of this process: the prompts already judged are not used again, and a round whose pairs were judged but
  not trained (killed before or during its training) is completed and trained first. An edited prompt file is
  refused (a judged position holding another prompt) rather than silently re-numbered.
- The model is loaded once. Each round trains with the app's rounds (mlx_dpo.training.rounds.run_round:
  same versions, same round length, same reference, same held-out check), so `online` and the app share one
  history. A round its held-out check rejects is kept on disk but not built on: the next round samples from,
  and trains on top of, the last accepted version (mlx_dpo.training.acceptance).
- Each prompt gets `samples_per_prompt` answers; a score judge pairs the best against the worst, a prefer judge
  runs a knockout and pairs its winner with its first loser (mlx_dpo.online.pairing, where the rule lives that
  no pair prefers an answer cut at max tokens over a finished one). The first answer of the pair is the one
  shown first (`shown_first`), as the app's A.
- With `turns` above 1, each conversation whose turn gave a pair goes on: its chosen answer becomes the assistant's
  turn, the next user message is asked, and the new turn is judged and stored pointing to the one it continues
  (mlx_dpo.online.conversations), all in the same round, from the same version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlx_dpo.data.online_records import PromptRef, prompt_key
from mlx_dpo.data.prompt_file import read_prompt_file
from mlx_dpo.data.records import StoredPair
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Finished, Status
from mlx_dpo.metric_names import (
    HELDOUT,
    HELDOUT_ACCURACY,
    HELDOUT_BASE,
    HELDOUT_KL,
    HELDOUT_REPETITION,
    HELDOUT_SCORE,
    HELDOUT_UNFINISHED,
    HELDOUT_WIN_VS_BASE,
)
from mlx_dpo.models.generate import SampleSettings, template_note
from mlx_dpo.models.load import load_model
from mlx_dpo.models.session import ModelSession
from mlx_dpo.online import conversations, free_reference, groups
from mlx_dpo.online.free_reference import sampler_is_reference
from mlx_dpo.online.pairing import choose_pair
from mlx_dpo.online.sampling import sample_answers
from mlx_dpo.online.verdict import Judge
from mlx_dpo.settings import ONLINE_SAMPLING, OnlineSettings, RoundSettings
from mlx_dpo.training.pause import pause_at
from mlx_dpo.training.rounds import run_round


@dataclass
class RoundReport:
    """One online round, as `--json` prints it (one line per round)."""

    round: int  # the online round of this prompt file (1-based)
    sampled_by: str  # "base" or "v<N>": the version whose answers were judged
    version: str | None  # "v<N>" the round trained; None when it had no pair to train (all ties/skips)
    prompts: int  # prompts judged in this round (this process and an interrupted one before it)
    pairs: int
    ties: int
    skips: int
    status: str  # "finished", "cancelled", or "nothing to train"
    heldout: dict[str, Any] = field(default_factory=dict)  # heldout/* of the version, heldout_base/* of the base
    decision: str | None = None  # the trained version: accepted (the next round builds on it) or rejected
    reason: str = ""  # why, in words (mlx_dpo.training.acceptance)
    seconds: dict[str, float] = field(default_factory=dict)  # sampling, judging, reference, training, heldout
    sampled_tokens_per_second: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Progress:
    """Where a prompt file stands in a workspace: judged positions, and the open (judged, untrained) round."""

    used: set[int]
    last_round: int
    open_round: int | None  # the round with untrained pairs, to be completed and trained first
    open_counts: dict[str, int]  # pairs/ties/skips already judged in the open round


def run_online(
    workspace: str | Path,
    prompts_file: str | Path,
    judge: Judge,
    *,
    model: str | None = None,
    online: OnlineSettings | None = None,
    eval_prompts: list[list[dict]] | None = None,
    sample_settings: SampleSettings | None = None,
    settings: dict | None = None,
    loaded: ModelSession | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> list[RoundReport]:
    """Run online rounds until this prompt file has `online.rounds` of them in `workspace` (or runs out of
    prompts). `judge` is a loaded judge (mlx_dpo.online.judges.load_judge); `settings` are round/training
    settings by name, as `run_round` takes them. Returns the reports of the rounds this call ran; `on_round`
    gets each as it ends.
    """
    emit = on_event or (lambda e: None)
    sample = sample_settings or ONLINE_SAMPLING
    online = online or OnlineSettings()
    _check_args(judge, online, sample)
    prompts = read_prompt_file(prompts_file)
    if online.turns > 1:
        conversations.read_follow_ups(prompts_file)  # a bad "follow_ups" is refused before anything runs
    source = str(Path(prompts_file).expanduser().resolve())
    with PreferenceStore(workspace) as store:
        progress = _progress(store, source, prompts)
    reports: list[RoundReport] = []
    number = progress.open_round or progress.last_round + 1
    if loaded is None and number <= online.rounds:  # nothing left to do loads nothing
        emit(Status("loading model"))
        loaded = load_model(model, chat_template=(settings or {}).get("chat_template"))
    note = template_note(loaded) if loaded is not None else None
    if note:
        emit(Status(note))
    while number <= online.rounds:
        counts = progress.open_counts if number == progress.open_round else {"pairs": 0, "ties": 0, "skips": 0}
        already = sum(counts.values())
        todo = [i for i in range(len(prompts)) if i not in progress.used][: max(0, online.per_round - already)]
        if not todo and not already:
            emit(Status(f"{prompts_file}: every prompt is used; stopping after {number - 1} round(s)"))
            break
        report = _one_round(
            workspace,
            loaded,
            model,
            judge,
            number,
            [(i, prompts[i]) for i in todo],
            source,
            counts,
            online,
            sample,
            settings,
            eval_prompts,
            emit,
        )
        progress.used.update(todo)
        reports.append(report)
        if on_round:
            on_round(report)
        if report.status == "cancelled":
            break
        number += 1
    return reports


def _check_args(judge: Judge, online: OnlineSettings, sample: SampleSettings) -> None:
    if judge.kind == "human":
        raise MlxDpoError("the human judge labels in the app: run `mlx-dpo online --judge human` from the command line")
    try:
        sample.check()
    except ValueError as e:
        raise MlxDpoError(f"sampler settings: {e}") from None


def _progress(store: PreferenceStore, source: str, prompts: list[list[dict]]) -> _Progress:
    """What earlier runs on this file left: MlxDpoError if the file changed under a judged position."""
    done = store.online_prompts(source)
    for row in done:
        if row.position >= len(prompts) or prompt_key(prompts[row.position]) != row.prompt_key:
            raise MlxDpoError(
                f"{source}: prompt {row.position + 1} is not the one judged there before; the file "
                "changed since; use a new prompt file (or workspace) rather than editing one in use"
            )
    last = max((row.round for row in done), default=0)
    # A round is open while it has judged pairs no finished round has tried (a rejected round's pairs are tried: they
    # wait untrained for the next round, which starts again from the last accepted version).
    pending = [row for row in done if row.round == last and row.pair_id is not None and not row.tried]
    counts = {"pairs": 0, "ties": 0, "skips": 0}
    if pending:
        for row in done:
            if row.round == last:
                counts["pairs" if row.pair_id is not None else "ties" if row.tie else "skips"] += 1
    return _Progress({row.position for row in done}, last, last if pending else None, counts)


def _one_round(
    workspace, loaded, model, judge, number, todo, source, counts, online, sample, settings, eval_prompts, emit
) -> RoundReport:
    """Sample, judge and store `todo` (position, prompt) pairs, then train and measure the round."""
    with PreferenceStore(workspace) as store:
        latest = store.latest_kept_round()
    sampled_by = latest.label if latest else "base"
    seconds = {"sampling": 0.0, "judging": 0.0, "reference": 0.0, "training": 0.0, "heldout": 0.0}
    tokens_per_second = 0.0
    if todo:
        n = online.samples_per_prompt
        emit(Status(f"round {number}: sampling {n} answers to {len(todo)} prompt(s) from {sampled_by}"))
        pause_at(f"online:sampling:{number}")  # test hooks (training/pause.py), here and below
        # The sampler's log-probs are the reference's when it is the round's reference (free_reference.py).
        free = online.free_reference and sampler_is_reference(latest is None, _reference(settings))
        with loaded.adapter(latest.adapter_path if latest else None):
            samples = sample_answers(
                loaded,
                [p for _, p in todo],
                sample,
                n=n,
                seed=number,
                batch_size=online.sample_batch_size,
                shared_prefill=online.shared_prefill,
                keep_logps=free,
                on_event=emit,
            )
            if free:
                free_reference.keep(loaded, [p for _, p in todo], samples, emit)
        seconds["sampling"], tokens_per_second = round(samples.seconds, 3), round(samples.tokens_per_second, 1)
        sampler = f"{loaded.name} {sampled_by} · temp {sample.temperature:g} · top-p {sample.top_p:g}"
        start = time.perf_counter()
        judged = []  # (position, its pair or None) for --turns
        grpo = (settings or {}).get("method") == "grpo"  # a GRPO round stores rated groups (online/groups.py)
        with PreferenceStore(workspace) as store:
            for (position, prompt), answers in zip(todo, samples.answers):
                where = PromptRef(source, position, number)
                if grpo:
                    kind, pair = (
                        groups.rate_and_store(
                            store,
                            judge,
                            prompt,
                            answers,
                            groups.answer_tokens(loaded, prompt, answers),
                            sampler=sampler,
                            version=sampled_by,
                            online=where,
                        ),
                        None,
                    )
                else:
                    kind, pair = store_judgement(
                        store, judge, prompt, answers, sampler=sampler, version=sampled_by, online=where
                    )
                counts[kind] += 1
                judged.append((position, pair))
                pause_at(f"online:judging:{number}")
        later = 0.0  # seconds sampling the later turns of conversations (--turns)
        if online.turns > 1:
            with loaded.adapter(latest.adapter_path if latest else None):
                later = _later_turns(
                    workspace, loaded, judge, judged, source, number, online, sample, sampler, sampled_by, counts, emit
                )
        seconds["sampling"] = round(seconds["sampling"] + later, 3)
        seconds["judging"] = round(time.perf_counter() - start - later, 3)
        emit(Status(f"round {number}: {counts['pairs']} pair(s), {counts['ties']} tie(s), {counts['skips']} skip(s)"))
    pause_at(f"online:judged:{number}")
    report = RoundReport(
        number,
        sampled_by,
        None,
        sum(counts.values()),
        counts["pairs"],
        counts["ties"],
        counts["skips"],
        "nothing to train",
        seconds=seconds,
        sampled_tokens_per_second=tokens_per_second,
    )
    with PreferenceStore(workspace) as store:
        untrained = (
            bool(store.untrained_pairs())
            if (settings or {}).get("method") != "grpo"
            else any(g.varied for g in store.ratings.untrained())
        )
    if untrained:
        _train(report, workspace, loaded, model, judge, settings, eval_prompts, sample, emit)
    return report


def _later_turns(
    workspace,
    loaded,
    judge,
    judged: list[tuple[int, StoredPair | None]],
    source: str,
    number: int,
    online: OnlineSettings,
    sample: SampleSettings,
    sampler: str,
    version: str,
    counts: dict[str, int],
    emit,
) -> float:
    """Turns 2..`online.turns` of each conversation whose last turn gave a pair: its chosen answer, the next user
    message (mlx_dpo.online.conversations), two or more answers from the same version, judged and stored pointing to
    the turn they continue. Counted in `counts` with the first turns. Not in the prompt file's progress: a run killed
    here goes on with the next prompts, these conversations stopping at the turns already stored. Returns the
    seconds spent sampling."""
    follow_ups = conversations.read_follow_ups(source)
    current = [(position, pair) for position, pair in judged if pair is not None]
    seconds = 0.0
    for turn in range(2, online.turns + 1):
        if not current:
            break
        prompts = [
            conversations.next_prompt(pair, conversations.follow_up(follow_ups[position], turn, online.follow_up))
            for position, pair in current
        ]
        emit(Status(f"round {number}: turn {turn} of {len(prompts)} conversation(s)"))
        samples = sample_answers(
            loaded,
            prompts,
            sample,
            n=online.samples_per_prompt,
            seed=number + 1000 * (turn - 1),
            batch_size=online.sample_batch_size,
        )
        seconds += samples.seconds
        later = []
        with PreferenceStore(workspace) as store:
            for (position, parent), prompt, answers in zip(current, prompts, samples.answers):
                kind, pair = store_judgement(
                    store, judge, prompt, answers, sampler=sampler, version=version, continues=parent.id
                )
                counts[kind] += 1
                later.append((position, pair))
        current = [(position, pair) for position, pair in later if pair is not None]
    return seconds


def _reference(settings: dict | None) -> str:
    """The rounds' reference setting (base or previous), as run_round reads it."""
    return (settings or {}).get("reference") or RoundSettings.reference


def judge_and_store(
    store: PreferenceStore,
    judge: Judge,
    prompt: list[dict],
    answers: list[str],
    *,
    sampler: str,
    version: str,
    online: PromptRef | None = None,
) -> str:
    """Judge one prompt's answers (mlx_dpo.online.pairing) and commit the result with every comparison the judge
    made; returns "pairs", "ties" or "skips" (what it gave)."""
    return store_judgement(store, judge, prompt, answers, sampler=sampler, version=version, online=online)[0]


def store_judgement(
    store: PreferenceStore,
    judge: Judge,
    prompt: list[dict],
    answers: list[str],
    *,
    sampler: str,
    version: str,
    online: PromptRef | None = None,
    continues: int | None = None,
) -> tuple[str, StoredPair | None]:
    """`judge_and_store`, also handing back the pair it stored (None for a tie or skip); `continues`: the pair of
    the conversation's turn this prompt goes on from."""
    judged = choose_pair(judge, prompt, answers)
    first, second, choice, note = answers[judged.first], answers[judged.second], judged.choice, judged.note
    # label=False: a program's judgments are not the person's labeling history (the app's undo)
    common = {
        "sampler": sampler,
        "judge": judge.name,
        "version": version,
        "online": online,
        "label": False,
        "comparisons": judged.comparisons,
    }
    if choice in (1, 2) and first != second:
        chosen, rejected = (first, second) if choice == 1 else (second, first)
        pair = store.add_pair(
            prompt,
            chosen,
            rejected,
            origin="sampled",
            note=note or None,
            shown_first="chosen" if choice == 1 else "rejected",
            continues=continues,
            **common,
        )
        return "pairs", pair
    if choice == 0:
        store.add_skip(prompt, "tie", answers=[first, second], **common)
        return "ties", None
    reason = "identical answers" if first == second else (note or "skipped by the judge")
    store.add_skip(prompt, reason, answers=[first, second], **common)
    return "skips", None


def _train(report: RoundReport, workspace, loaded, model, judge, settings, eval_prompts, sample, emit) -> None:
    """Train the round on the store's untrained pairs and fill in its version, status, timings, held-out numbers."""
    trained_at: list[float] = []

    def timed(event: Event) -> None:  # training ends at Finished; the held-out measurement follows it
        if isinstance(event, Finished):
            trained_at.append(time.perf_counter())
        emit(event)

    start = time.perf_counter()
    result = run_round(
        workspace,
        model=model,
        settings=settings,
        on_event=timed,
        loaded=loaded,
        eval_prompts=eval_prompts,
        judge=judge,
        sample_settings=sample,
    )
    end = time.perf_counter()
    trained = trained_at[0] if trained_at else end
    metrics = result.metrics
    reference = float(metrics.get("ref_pass_seconds") or 0.0)
    report.seconds.update(
        reference=round(reference, 3),
        training=round(max(0.0, trained - start - reference), 3),
        heldout=round(end - trained, 3),
    )
    report.version, report.status = f"v{result.version}", result.status
    report.decision, report.reason = result.decision, result.reason or ""
    report.heldout = {k: v for k, v in metrics.items() if k.startswith((HELDOUT, HELDOUT_BASE))}


def describe_round(report: RoundReport) -> str:
    """One line for a person: what the round judged, what it trained, and the held-out numbers."""
    held = report.heldout
    parts = [
        f"round {report.round}: judged {report.prompts} prompts' answers from {report.sampled_by} "
        f"({report.pairs} pairs, {report.ties} ties, {report.skips} skips)",
        f"trained {report.version}" if report.version else report.status,
    ]
    if report.decision:
        parts.append(f"{report.decision}: {report.reason}" if report.reason else report.decision)
    for key, name in (
        (HELDOUT_SCORE, "score"),
        (HELDOUT_KL, "KL"),
        (HELDOUT_ACCURACY, "accuracy"),
        (HELDOUT_WIN_VS_BASE, "wins vs base"),
        (HELDOUT_UNFINISHED, "unfinished"),
        (HELDOUT_REPETITION, "repeated 3-grams"),
    ):
        if held.get(key) is not None:
            base = held.get(key.replace(HELDOUT, HELDOUT_BASE))
            parts.append(f"{name} {held[key]:.3f}" + (f" (base {base:.3f})" if isinstance(base, (int, float)) else ""))
    return " · ".join(parts)
