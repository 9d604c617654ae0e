"""Incremental training rounds on a workspace: label some pairs, train a round, label more, train again.

    result = run_round("my-workspace", settings={"iters": 20, "replay": 0.5}, on_event=print)

Round N trains on the pairs no finished round has used yet, plus a seeded sample of older pairs
(`replay` x the number of new pairs), starting from the latest finished round's adapter and writing
`<workspace>/adapters/v<N>/`. The reference is always the base model (`reference="base"`), so every
cached reference log-prob stays valid and only the new pairs need a reference pass.

A round is recorded in the store (rounds + round_pairs) when it ends: "finished" rounds count as
trained; a cancelled round keeps its last checkpoint on disk but its pairs stay untrained, and the
next round starts from the latest *finished* version.

Each round continues from the previous adapter's weights and its AdamW moments (from that round's
last checkpoint); the step count and warmup/cosine schedule start afresh over the round's steps.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import Event, Status
from mlx_dpo.data.store import PreferenceStore
from mlx_dpo.options import build, flatten, resolve, settings_of
from mlx_dpo.settings import TRAIN_GROUPS, LoraSettings, RoundSettings, RunOptions, TrainingArgs
from mlx_dpo.training import run

ADAPTERS_DIR = "adapters"
# Round defaults that differ from a plain `train`: save (and report) every step, so a cancelled round
# keeps the adapter of its last step and the app can plot every step.
ROUND_DEFAULTS = {"save_every": 1, "steps_per_report": 1}


@dataclass
class RoundResult:
    version: int
    adapter_path: Path
    status: str  # "finished" or "cancelled"
    metrics: dict
    new_pair_ids: list[int]
    replay_pair_ids: list[int]
    init_adapter: str | None


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

    The record holds every training and LoRA setting (defaults included), the replay share and the
    run options given, so a round says what it trained with even after a default changes.
    """
    given, unknown = resolve(settings or {}, settings_of(*TRAIN_GROUPS, RoundSettings))
    if unknown:
        raise TypeError(f"unknown round setting(s): {', '.join(sorted(unknown))}")
    if "init_adapter" in given:
        raise MlxDpoError("a round starts from the workspace's latest finished round; init_adapter cannot be set")
    options = {**ROUND_DEFAULTS, **given}
    groups = [build(group, options) for group in (TrainingArgs, LoraSettings, RoundSettings, RunOptions)]  # checked
    record = flatten(*groups[:3])
    # Of the run options, those given; validation pairs only as a file name, not as a list of pairs.
    record.update({name: str(value) if isinstance(value, Path) else value for name, value in options.items()
                   if name in settings_of(RunOptions) and not isinstance(value, (list, tuple))})
    options.pop("replay", None)
    return options, record


def run_round(
    workspace: str | Path,
    *,
    model: str | None = None,
    settings: dict | None = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: threading.Event | None = None,
    loaded=None,
) -> RoundResult:
    """Train one round. `settings`: RoundSettings' `replay` plus any `mlx_dpo.training.run.train` setting
    (iters, epochs, batch_size, learning_rate, beta, seed, lora_rank, lora_num_layers, ...; see mlx_dpo.settings)."""
    emit = on_event or (lambda e: None)
    options, recorded_settings = round_options(settings)
    with PreferenceStore(workspace) as store:
        version = next_version(store, workspace)
        # A KTO round also trains the answers marked good or bad (feedback_records.py), alongside the pairs.
        feedback = store.untrained_feedback() if recorded_settings["loss_type"] == "kto" else []
        new, replayed = plan_round(store, recorded_settings["replay"], recorded_settings["seed"], version,
                                   has_feedback=bool(feedback))
        latest = store.latest_finished_round()
    init_adapter = latest.adapter_path if latest else None
    adapter_dir = adapters_root(workspace) / f"v{version}"
    emit(Status(f"round v{version}: {len(new)} new pair(s) + {len(replayed)} replayed, "
                f"from {latest.label if latest else 'the base model'}"))
    pairs = [p.to_preference_pair() for p in new + replayed] + [f.to_feedback() for f in feedback]
    recorded_settings = {**recorded_settings, "model": model, "init_adapter": init_adapter}
    pair_ids = [p.id for p in new + replayed]
    try:
        result = run.train(pairs, model=model, adapter_path=adapter_dir, init_adapter=init_adapter, reference="base",
                           on_event=emit, cancel=cancel, loaded=loaded, **options)
    except BaseException as e:
        with PreferenceStore(workspace) as store:
            store.record_round(version, adapter_dir, recorded_settings, {"error": str(e)}, "failed", pair_ids)
            store.record_round_feedback(version, [f.id for f in feedback])
        raise
    status = "cancelled" if result.cancelled else "finished"
    metrics = {**result.metrics, **result.eval_metrics,
               "ref_cache/hits": result.reference.hits, "ref_cache/misses": result.reference.misses,
               "new_pairs": len(new), "replayed_pairs": len(replayed), "new_feedback": len(feedback)}
    with PreferenceStore(workspace) as store:
        store.record_round(version, adapter_dir, recorded_settings, metrics, status, pair_ids)
        store.record_round_feedback(version, [f.id for f in feedback])
    return RoundResult(version, adapter_dir, status, metrics, [p.id for p in new], [p.id for p in replayed],
                       init_adapter)
