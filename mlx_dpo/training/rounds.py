"""Incremental training rounds on a workspace: label some pairs, train a round, label more, train again.

    result = run_round("my-workspace", settings={"passes": 2, "replay": 0.5}, on_event=print)

Round N trains on the pairs no finished round has used yet, plus a seeded sample of older pairs
(`replay` x the number of new pairs), starting from the latest finished round's adapter and writing
`<workspace>/adapters/v<N>/`.

A round's length follows its data: `passes` over its new + replayed pairs, in optimizer steps, kept within
[`min_steps`, `max_steps`] (`round_steps`); an `iters` given sets it exactly. One new pair is then seen a
couple of times, not twenty (the defaults' experiment: benchmarks/rounds.py).

The reference is the base model (`reference="base"`: every cached reference log-prob stays valid and only
new pairs need a reference pass), or the previous finished version with its adapter on
(`reference="previous"`: DPO re-anchored each round; its log-probs are cached under that adapter's
fingerprint, so a rerun on the same version reuses them).

A round is recorded in the store (rounds + round_pairs) when it ends; a cancelled round keeps its last
checkpoint on disk but its pairs stay untrained. A finished round is then measured on held-out data
(training/heldout.py: the store's validation pairs, and `eval_prompts` or the validation pairs' prompts), its
record's metrics hold those numbers (`heldout/...`) and the base's (`heldout_base/...`), and they decide whether
it is kept (training/acceptance.py, `accept` and `kl_budget`): an accepted round counts as trained and the next
round starts from it; a rejected one stays on disk with its reason, its pairs untrained, and the next round
starts again from the last accepted version with its learning rate halved for each rejection since. Until its
check is done a round is "pending" and nothing builds on it (a kill there loses no kept version).

Each round continues from the previous adapter's weights and its AdamW moments (from that round's
last checkpoint); the step count and warmup/cosine schedule start afresh over the round's steps.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Status
from mlx_dpo.group_settings import GroupSettings
from mlx_dpo.metric_names import (
    HELDOUT,
    HELDOUT_BASE,
    HELDOUT_ERROR,
    NEW_FEEDBACK,
    NEW_PAIRS,
    REF_HITS,
    REF_MISSES,
    REPLAYED_PAIRS,
)
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.models.load import load_model
from mlx_dpo.models.session import ModelSession
from mlx_dpo.options import build, flatten, resolve, settings_of
from mlx_dpo.settings import (
    ONLINE_SAMPLING,
    ROUND_DEFAULTS,
    TRAIN_GROUPS,
    LoraSettings,
    RoundSettings,
    RunOptions,
    TrainingArgs,
)
from mlx_dpo.tracking import open_tracker
from mlx_dpo.training import group_rounds, heldout, run
from mlx_dpo.training.acceptance import decide, step_scale
from mlx_dpo.training.pause import pause_at
from mlx_dpo.training.trainer import total_steps
from mlx_dpo.training.versions import claim_version

if TYPE_CHECKING:  # the judge interface (mlx_dpo.online.judges)
    from mlx_dpo.online.judges import Judge

ADAPTERS_DIR = "adapters"


@dataclass
class RoundResult:
    version: int
    adapter_path: Path
    status: str  # "finished" or "cancelled"
    metrics: dict
    new_pair_ids: list[int]
    replay_pair_ids: list[int]
    init_adapter: str | None
    decision: str | None = None  # a finished round's: accepted or rejected (training/acceptance.py)
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "finished" and self.decision == "accepted"


def adapters_root(workspace: str | Path) -> Path:
    return Path(workspace) / ADAPTERS_DIR


def next_version(store: PreferenceStore, workspace: str | Path) -> int:
    """One more than any recorded round or any v<N> folder (an unrecorded crashed round keeps its number)."""
    used = [r.version for r in store.list_rounds()]
    root = adapters_root(workspace)
    if root.is_dir():
        used += [int(p.name[1:]) for p in root.iterdir() if p.name[:1] == "v" and p.name[1:].isdigit()]
    return max(used, default=0) + 1


def plan_round(store: PreferenceStore, replay: float, seed: int, version: int, *, has_feedback: bool = False):
    """(new stored pairs, replayed stored pairs) for round `version`; a KTO round may have only new feedback."""
    replay = RoundSettings(replay=replay).replay  # its rule (0 or more) is the setting's
    new = store.untrained_pairs()
    if not new and not has_feedback:
        raise MlxDpoError("no new pairs to train on: label some pairs first")
    old = store.trained_pairs()
    count = min(len(old), round(replay * len(new)))
    replayed = sorted(random.Random(seed * 1_000_003 + version).sample(old, count), key=lambda p: p.id) if count else []
    return new, replayed


def round_options(settings: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the options a round's run trains with, the settings its record keeps), both by setting name.

    The record holds every training, LoRA and round setting (defaults included) and the run options given,
    so a round says what it trained with even after a default changes.
    """
    given, unknown = resolve(settings or {}, settings_of(*TRAIN_GROUPS, RoundSettings, GroupSettings))
    if unknown:
        raise TypeError(f"unknown round setting(s): {', '.join(sorted(unknown))}")
    if "init_adapter" in given:
        raise MlxDpoError("a round starts from the workspace's latest finished round; init_adapter cannot be set")
    if "epochs" in given:  # two ways of saying a round's length would leave one of them ignored
        raise MlxDpoError(
            "a round's length is set by passes (between min_steps and max_steps) or by iters; "
            "epochs applies to a plain train run"
        )
    options = {**ROUND_DEFAULTS, **given}
    groups = [build(group, options) for group in (TrainingArgs, LoraSettings, RoundSettings, GroupSettings, RunOptions)]
    record = flatten(*groups[:4])  # (built: checked)
    # Of the run options, those given; validation pairs only as a file name, not as a list of pairs.
    record.update(
        {
            name: str(value) if isinstance(value, Path) else value
            for name, value in options.items()
            if name in settings_of(RunOptions) and not isinstance(value, (list, tuple))
        }
    )
    for name in settings_of(RoundSettings, GroupSettings):
        options.pop(name, None)
    return options, record


def round_steps(settings: RoundSettings, args: TrainingArgs, num_pairs: int) -> int:
    """A round's optimizer steps: `passes` over its pairs (counted as the trainer counts an epoch's steps),
    kept within [min_steps, max_steps]."""
    steps = total_steps(dataclasses.replace(args, iters=None, epochs=settings.passes), num_pairs)
    return max(settings.min_steps, min(settings.max_steps, steps))


def heldout_set(
    workspace: str | Path,
    settings: RoundSettings,
    *,
    valid_pairs: Sequence[PreferencePair],
    eval_prompts: Sequence[list[dict]] | None,
    judge: Judge | None,
    sample_settings: SampleSettings | None,
    beta: float,
    batch_size: int,
) -> heldout.HeldoutSet | None:
    """What a finished round is measured on: `eval_prompts`, else the validation pairs' prompts (each once,
    the first `heldout_prompts`), and the validation pairs. None when the workspace has neither."""
    prompts = list(eval_prompts) if eval_prompts is not None else []
    if eval_prompts is None:
        for pair in valid_pairs:
            if pair.prompt not in prompts:
                prompts.append(pair.prompt)
    given = len(prompts)
    prompts = prompts[: settings.heldout_prompts]
    if not prompts and not valid_pairs:
        return None
    return heldout.HeldoutSet(
        Path(workspace),
        prompts,
        list(valid_pairs),
        judge,
        sample_settings or ONLINE_SAMPLING,
        settings.heldout_samples,
        beta,
        batch_size,
        given,
    )


def _session(loaded: ModelSession | None, model: str | None, emit: Callable[[Event], None]) -> ModelSession:
    """The model a round trains: the caller's session (whatever version is on it: the run puts on what it needs),
    else one loaded now."""
    if loaded is None:
        emit(Status("loading model"))
        return load_model(model)
    return loaded


def _measure(
    workspace: str | Path,
    version: int,
    loaded: ModelSession,
    held: heldout.HeldoutSet,
    adapter_dir: Path,
    latest,
    emit: Callable[[Event], None],
) -> dict:
    """A finished round's held-out numbers, added to its record; a failed measurement is noted, not raised."""
    pause_at("heldout")  # a test hook (pause.py)
    previous = (latest.label, latest.adapter_path) if latest else None
    try:
        found = heldout.measure_version(loaded, held, f"v{version}", adapter_dir, previous, emit)
    except MlxDpoError as e:  # the round itself trained and is recorded; say why its numbers are missing
        emit(Status(f"held-out measurement failed: {e}"))
        found = {HELDOUT_ERROR: str(e)}
    with PreferenceStore(workspace) as store:
        return store.update_round_metrics(version, found).metrics


def _decide(
    workspace: str | Path, version: int, metrics: dict, latest, settings: RoundSettings, emit: Callable[[Event], None]
) -> tuple[bool, str]:
    """Keep the measured round or not (training/acceptance.py), recorded with its reason."""
    base = {key.replace(HELDOUT_BASE, HELDOUT): value for key, value in metrics.items() if key.startswith(HELDOUT_BASE)}
    if HELDOUT_ERROR in metrics:
        accepted, reason = False, f"not checked: {metrics[HELDOUT_ERROR]}"
    else:
        accepted, reason = decide(
            metrics, latest.metrics if latest else None, base, accept=settings.accept, kl_budget=settings.kl_budget
        )
    with PreferenceStore(workspace) as store:
        store.decide_round(version, accepted, reason)
    back = latest.label if latest else "the base"
    emit(
        Status(
            f"v{version} accepted: {reason}"
            if accepted
            else f"v{version} rejected ({reason}); the next round starts again from {back}"
        )
    )
    return accepted, reason


def _first_decision(status: str, checked: bool, accept: str) -> tuple[str | None, str | None]:
    """What a round's record says when training ends: pending its check, kept without one, or nothing (not finished)."""
    if status != "finished":
        return None, None
    if checked:
        return "pending", "trained; its held-out check has not run yet"
    return "accepted", (
        "kept without a check (--accept always)"
        if accept == "always"
        else "kept unchecked: no held-out prompts or validation pairs"
    )


def _smaller_step(options: dict, recorded_settings: dict, rejected: int) -> str:
    """A smaller step after each rejection since the last accepted version (acceptance.py says why): lowers the
    round's learning rate in place and returns the note for its Status line ("" when nothing was rejected)."""
    if not rejected:
        return ""
    options["learning_rate"] = recorded_settings["learning_rate"] = recorded_settings["learning_rate"] * step_scale(
        rejected
    )
    return f", learning rate {recorded_settings['learning_rate']:g} after {rejected} rejection(s)"


def _record(
    workspace: str | Path,
    version: int,
    adapter_dir: Path,
    settings: dict,
    metrics: dict,
    status: str,
    pairs: list,
    feedback: list,
    decision: str | None = None,
    reason: str | None = None,
    groups: list | None = None,
) -> None:
    """The round's record, with the stored pairs, feedback and rated groups it trained, in the store."""
    with PreferenceStore(workspace) as store:
        store.record_round(version, adapter_dir, settings, metrics, status, [p.id for p in pairs], decision, reason)
        store.record_round_feedback(version, [f.id for f in feedback])
        store.ratings.record_round(version, [i for g in groups or [] for i in g.ids])


def _round_data(store: PreferenceStore, settings: dict, version: int) -> tuple:
    """What round `version` trains and starts from: (new answers marked good or bad, new pairs, replayed pairs, the
    latest kept round, the rounds rejected since, the validation pairs)."""
    # A KTO round also trains the answers marked good or bad (feedback_records.py), alongside the pairs.
    feedback = store.untrained_feedback() if settings["loss_type"] == "kto" else []
    new, replayed = plan_round(store, settings["replay"], settings["seed"], version, has_feedback=bool(feedback))
    latest, rejected = store.latest_kept_round(), store.rejected_since_kept()
    return feedback, new, replayed, latest, rejected, store.training_pairs("valid")


def _data(store: PreferenceStore, settings: dict, version: int) -> tuple:
    """`_round_data`, and the rated groups a GRPO round trains in place of pairs (None: a DPO round)."""
    if not group_rounds.is_grpo(settings):
        return *_round_data(store, settings, version), None
    groups = group_rounds.untrained_groups(store)
    return [], [], [], store.latest_kept_round(), store.rejected_since_kept(), store.training_pairs("valid"), groups


def _steps(settings: RoundSettings, recorded: dict, pairs: list, groups: list | None) -> int:
    """A round's optimizer steps when `iters` is not given: by its pairs, or a GRPO round's by its groups."""
    if groups is not None:
        return group_rounds.round_steps(groups, recorded)
    return round_steps(settings, build(TrainingArgs, recorded), len(pairs))


def _trainer(
    pairs: list, groups: list | None, model: str | None, tracker, recorded: dict, sample_settings: SampleSettings | None
) -> Callable:
    """What trains the round: run.train on its pairs, or group_rounds.train on a GRPO round's rated groups."""
    if groups is None:
        return partial(run.train, pairs, model=model, tracker=tracker)
    return partial(group_rounds.train, groups, recorded=recorded, sample_settings=sample_settings)


def _trains(new: list, replayed: list, groups: list | None) -> str:
    """What a round trains, in words: a GRPO round's rated groups, else its new and replayed pairs."""
    return (
        f"{len(groups)} rated group(s)" if groups is not None else f"{len(new)} new pair(s) + {len(replayed)} replayed"
    )


def run_round(
    workspace: str | Path,
    *,
    model: str | None = None,
    settings: dict | None = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: threading.Event | None = None,
    loaded: ModelSession | None = None,
    eval_prompts: Sequence[list[dict]] | None = None,
    judge: Judge | None = None,
    sample_settings: SampleSettings | None = None,
) -> RoundResult:
    """Train one round, then measure it on held-out data (training/heldout.py).

    `settings`: RoundSettings' (replay, passes, min_steps, max_steps, reference, heldout_samples,
    heldout_prompts) plus any `mlx_dpo.training.run.train` setting (iters, batch_size, learning_rate, beta,
    seed, lora_rank, ...; see mlx_dpo.settings). `eval_prompts` (chat message lists) are the held-out
    prompts (default: the prompts of the store's validation pairs); `judge` (mlx_dpo.online.judges) adds
    its score and win rates; `sample_settings` is how held-out answers are sampled (default: the app's).
    `loaded` is used and left with the new version's adapter on (after a cancel or a rejection: the version it
    started from).
    """
    emit = on_event or (lambda e: None)
    options, recorded_settings = round_options(settings)
    round_settings = build(RoundSettings, recorded_settings)
    with PreferenceStore(workspace) as store:
        # Its folder made and locked (a round a killed process left unrecorded is recorded first: versions.py).
        claim = claim_version(store, adapters_root(workspace), lambda: next_version(store, workspace))
        with claim.given_up_on_error():  # nothing to train: no round, so no folder either
            feedback, new, replayed, latest, rejected, valid, groups = _data(store, recorded_settings, claim.version)
    version = claim.version
    smaller = _smaller_step(options, recorded_settings, rejected)
    init_adapter = latest.adapter_path if latest else None
    adapter_dir = adapters_root(workspace) / f"v{version}"
    trained = new + replayed  # the stored pairs this round trains
    pairs = [p.to_preference_pair() for p in trained] + [f.to_feedback() for f in feedback]
    options.setdefault("iters", _steps(round_settings, recorded_settings, pairs, groups))
    reference = "start" if round_settings.reference == "previous" and init_adapter else "base"
    emit(
        Status(
            f"round v{version}: {_trains(new, replayed, groups)}, {options['iters']} step(s), "
            f"from {latest.label if latest else 'the base model'}"
            f"{f', reference {latest.label}' if reference == 'start' else ''}{smaller}"
        )
    )
    recorded_settings = {
        **recorded_settings,
        "model": model,
        "init_adapter": init_adapter,
        "step_scale": step_scale(rejected),
    }
    # --report-to: the workspace is the tracker's project, this version its run (tracking.py).
    record = partial(_record, workspace, version, adapter_dir, groups=groups)  # the round's record, in the store
    tracker = open_tracker(
        options.get("report_to", "none"),
        options.get("project") or Path(workspace).resolve().name,
        f"v{version}",
        recorded_settings,
        emit,
    )
    try:
        loaded = _session(loaded, model, emit)
        trainer = _trainer(pairs, groups, model, tracker, recorded_settings, sample_settings)
        result = trainer(
            adapter_path=adapter_dir,
            init_adapter=init_adapter,
            reference=reference,
            on_event=emit,
            cancel=cancel,
            loaded=loaded,
            **options,
        )
    except BaseException as e:
        if tracker is not None:
            tracker.finish()
        record(recorded_settings, {"error": str(e)}, "failed", trained, feedback)
        raise
    status = "cancelled" if result.cancelled else "finished"
    metrics = {
        **result.metrics,
        **result.eval_metrics,
        "steps": options["iters"],
        REF_HITS: result.reference.hits,
        REF_MISSES: result.reference.misses,
        NEW_PAIRS: len(new),
        REPLAYED_PAIRS: len(replayed),
        NEW_FEEDBACK: len(feedback),
    }
    held = heldout_set(
        workspace,
        round_settings,
        valid_pairs=valid,
        eval_prompts=eval_prompts,
        judge=judge,
        sample_settings=sample_settings,
        **{k: recorded_settings[k] for k in ("beta", "batch_size")},
    )
    checked = status == "finished" and held is not None and round_settings.accept != "always"
    decision, reason = _first_decision(status, checked, round_settings.accept)
    record(recorded_settings, metrics, status, trained, feedback, decision, reason)
    claim.release()
    if status == "finished" and held is not None:
        metrics = _measure(workspace, version, loaded, held, adapter_dir, latest, emit)
        if tracker is not None:  # the held-out numbers, and the version's held-out answers as a table
            tracker.log_heldout(metrics, held.prompts, held.kept(f"v{version}").get("answers") or [], options["iters"])
    if checked:
        accepted, reason = _decide(workspace, version, metrics, latest, round_settings, emit)
        decision = "accepted" if accepted else "rejected"
    # The model as the next round finds it: the new version if kept, else the one it started from.
    loaded.use_adapter(adapter_dir if decision == "accepted" else init_adapter)
    if tracker is not None:
        tracker.finish()
    return RoundResult(
        version,
        adapter_dir,
        status,
        metrics,
        [p.id for p in new],
        [p.id for p in replayed],
        init_adapter,
        decision,
        reason,
    )
