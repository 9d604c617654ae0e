"""A training run and an evaluation, start to end: what `mlx-dpo train`/`eval` and `mlx_dpo.api` do.

    result = train("pairs.jsonl", iters=50, on_event=print, cancel=threading.Event())

Order of work in `train`: load the base model, tokenize, run the reference pass (cache misses
only) on the model in its starting state, add the adapter (or restore a checkpoint), train.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_dpo.atomic import atomic_file
from mlx_dpo.data.pairs import PreferencePair, load_pairs
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.events import EvalMetrics, Event, Failed, Finished, Status
from mlx_dpo.metric_names import ACCURACY, LOGPS_CHOSEN, LOGPS_REJECTED, LOSS, MARGIN, REF_HITS, REF_MISSES
from mlx_dpo.models.adapter import (
    CONFIG_FILE,
    adapter_config,
    adapter_weights,
    read_adapter_config,
    settings_from_config,
)
from mlx_dpo.models.load import load_model, use_chat_template
from mlx_dpo.models.session import ModelSession
from mlx_dpo.options import build, flatten, resolve, settings_of
from mlx_dpo.settings import EVAL_LOSS_SETTINGS, TRAIN_GROUPS, LoraSettings, RunOptions, TrainingArgs, loss_types
from mlx_dpo.tracking import Tracker, check_available
from mlx_dpo.training import checkpoint, distributed, memory
from mlx_dpo.training.kto_scores import kto_scores
from mlx_dpo.training.method_data import kto_data, method_reference, with_labels
from mlx_dpo.training.methods import is_kto
from mlx_dpo.training.metrics_writer import metrics_writer
from mlx_dpo.training.ref_cache import RefCache, arrays_digest, reference_fingerprint
from mlx_dpo.training.reference import ReferenceStats, RefLogps, reference_logps
from mlx_dpo.training.tokens import EncodedPair, Encoder, plain_rows_note, token_limits, truncation_report
from mlx_dpo.training.trainer import evaluate_batches, train_loop

DEFAULT_ADAPTERS_DIR = Path("adapters")

PairSource = str | Path | Sequence[PreferencePair]
# Losses that compare the pairs of a batch with each other (KTO's KL point, AOT's sorts): one rank only.
BATCH_COUPLED_LOSSES = {"kto", "aot", "aot_unpaired"}


@dataclass
class TrainResult:
    adapter_path: Path
    metrics: dict  # the last step report
    eval_metrics: dict
    reference: ReferenceStats
    cancelled: bool = False
    rank: int = 0  # this process's rank under mlx.launch; only rank 0 writes and reports


def _pairs(
    source: PairSource,
    skip_invalid: bool,
    on_event: Callable[[Event], None],
    config: str | None = None,
    default_split: str = "train",
) -> list[PreferencePair]:
    if isinstance(source, (str, Path)):
        result = load_pairs(source, skip_invalid=skip_invalid, config=config, default_split=default_split)
        if result.skipped:
            on_event(Status(f"{source}: skipped {result.skipped} invalid row(s)"))
        return result.pairs
    return list(source)


def _encode(
    encoder: Encoder, pairs: list[PreferencePair], skip_invalid: bool, emit: Callable[[Event], None]
) -> list[EncodedPair]:
    """The pairs as token ids; with --skip-invalid the rows dropped are named in a Status line."""
    encoded, problems = encoder.encode_all(pairs, skip_invalid=skip_invalid)
    if problems:
        emit(Status(f"skipped {len(problems)} row(s) that cannot be tokenized: " + "; ".join(problems[:10])))
    return encoded


def _numeric_setup(loaded: ModelSession) -> str:
    dtype = loaded.model.model.embed_tokens.weight.dtype if not loaded.quantized else "quantized"
    return f"{dtype}-{mx.default_device()}"


def model_fingerprint(loaded: ModelSession, adapter_digest: str | None = None) -> str:
    """The reference cache's name for the loaded model as it runs here, with an adapter's digest when one is on."""
    return reference_fingerprint(loaded.path, adapter_digest=adapter_digest, numeric=_numeric_setup(loaded))


def _split_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], RunOptions, TrainingArgs, LoraSettings]:
    """train()'s setting keywords -> (the values given, by setting name; the three setting groups)."""
    given, unknown = resolve(kwargs, settings_of(*TRAIN_GROUPS))
    if unknown:
        raise TypeError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return given, build(RunOptions, given), build(TrainingArgs, given), build(LoraSettings, given)


def train(
    data: PairSource,
    *,
    model: str | None = None,
    adapter_path: str | Path | None = None,
    reference: str = "start",
    resume: bool = False,
    on_event: Callable[[Event], None] | None = None,
    cancel: threading.Event | None = None,
    loaded: ModelSession | None = None,
    tracker: Tracker | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a DPO adapter on `data` (a JSONL or Parquet file, a dataset folder, a Hub dataset `owner/name[:split]`,
    or a list of PreferencePair).

    `settings` are named as in mlx_dpo.settings: RunOptions' (valid_data, data_config, init_adapter, max_length,
    max_prompt_length, skip_invalid, metrics_file, report_to, project), TrainingArgs' (iters, beta, loss_type, ...) and
    LoraSettings' as lora_<field> (lora_rank, lora_num_layers, ...); a CLI flag's spelling works too
    (loss, lora_layers). A bad value raises SettingError, an unknown name TypeError.

    `init_adapter` continues from an existing adapter; `reference="start"` uses it as the
    reference (DPO's usual choice), `reference="base"` keeps the base model as the reference
    so cached reference log-probs stay valid across incremental rounds. `tracker`: a round's open tracker run
    (tracking.py); otherwise `report_to` opens one for this run. `loaded`: a model session to train on (whatever
    adapter is on it: the run puts on what it needs); it leaves with the trained adapter on (`adapter_path`'s),
    or with the base alone when the run was cancelled or failed.
    """
    emit = on_event or (lambda e: None)
    if not distributed.group().is_writer:  # rank 0 alone reports: mlx.launch merges every rank's output
        emit = lambda e: None  # noqa: E731
    try:
        return _train(data, model, adapter_path, reference, resume, emit, cancel, loaded, tracker, settings)
    except Exception as e:
        emit(Failed(error=str(e)))
        raise


@dataclass
class _Start:
    """Where a run starts: afresh, from a starting adapter, or from its own last checkpoint."""

    args: TrainingArgs
    lora: LoraSettings
    init_adapter: str | Path | None
    reference: str
    resume_from: Path | None = None


def _start(
    adapter_dir: Path,
    resume: bool,
    reference: str,
    given: dict[str, Any],
    run: RunOptions,
    args: TrainingArgs,
    lora: LoraSettings,
) -> _Start:
    if reference not in ("start", "base"):
        raise MlxDpoError(f"reference must be 'start' or 'base', not {reference!r}")
    if not resume:
        if checkpoint.latest(adapter_dir) is not None:
            raise MlxDpoError(
                f"{adapter_dir}: already holds a training run; pass --resume to continue it "
                "or choose another --adapter-path"
            )
        if (adapter_dir / CONFIG_FILE).exists():
            raise MlxDpoError(
                f"{adapter_dir}: already holds an adapter; choose another --adapter-path "
                "(or start from it with --init-adapter)"
            )
        return _Start(args, lora, run.init_adapter, reference)
    resume_from = checkpoint.latest(adapter_dir)
    if resume_from is None:
        raise MlxDpoError(f"{adapter_dir}: no checkpoint to resume from")
    # The checkpoint folder is complete by construction; the top-level adapter may lag behind it
    # (a kill between the two writes), so the settings come from the checkpoint.
    saved_config = read_adapter_config(resume_from)
    saved = saved_config.get("mlx_dpo", {})
    # The run continues with its own settings (schedule length, learning rate, ...) unless a
    # setting given now says otherwise.
    args = build(TrainingArgs, given, base=checkpoint.read_state(resume_from).get("args", {}))
    return _Start(
        args,
        settings_from_config(saved_config),
        saved.get("init_adapter"),
        saved.get("reference", "start"),
        resume_from,
    )


def _reference_pass(
    session: ModelSession, encoded: list[EncodedPair], start: _Start, emit: Callable[[Event], None]
) -> tuple[RefLogps, ReferenceStats, LoraSettings, str]:
    """The reference log-probs, then the adapter that trains: (ref, stats, its settings, the reference's fingerprint).

    The reference is the model as it starts (base, or base + starting adapter), run before training
    changes it. With reference="base" the starting adapter goes on only after the reference pass.
    """
    first = start.init_adapter if start.init_adapter and start.reference == "start" else None
    session.use_adapter(first)
    start_digest = arrays_digest(adapter_weights(session.model)) if first else None
    fingerprint = model_fingerprint(session, start_digest)
    distributed.group().check_same(model=fingerprint)  # weights, tokenizer, starting adapter, numeric setup
    # The method decides what the reference pass computes, and whether one runs at all (method_data.py).
    ref, stats = method_reference(
        session.model,
        encoded,
        lambda: RefCache(fingerprint),
        start.args,
        batch_size=2 * start.args.batch_size,
        on_event=emit,
        checks=session.checks,
    )
    if not start.init_adapter:
        # LoRA's A matrices start random: draw them from the run's seed, so the same seed gives the same run.
        mx.random.seed(start.args.seed)
    lora = session.train_adapter(start.init_adapter, start.lora)
    return ref, stats, lora, fingerprint


def _same_on_every_rank(group: distributed.Group, start: _Start, run: RunOptions, pairs: list[PreferencePair]) -> None:
    """Several ranks must train on the same pairs with the same settings: compared before the model loads
    (the model itself is compared by its fingerprint before the reference pass)."""
    options = {k: v for k, v in asdict(run).items() if k != "metrics_file"}
    settings = json.dumps(
        [
            asdict(start.args),
            asdict(start.lora),
            options,
            start.init_adapter,
            start.reference,
            start.resume_from.name if start.resume_from else None,
        ],
        sort_keys=True,
        default=str,
    )
    rows = [[p.id, p.prompt, p.chosen, p.rejected] for p in pairs]  # not `source`: paths differ between machines
    data = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    group.check_same(settings=settings, data=data)
    coupled = sorted(set(loss_types(start.args.loss_type)) & BATCH_COUPLED_LOSSES)
    if coupled:  # a loss of the whole batch is not the weighted sum of its shares' losses
        raise MlxDpoError(
            f"--loss {','.join(coupled)} couples the pairs of a batch (a batch mean or a sort), so "
            "it does not train over several ranks yet; train it with one process"
        )
    if start.args.batch_size < group.size:
        raise MlxDpoError(
            f"--batch-size {start.args.batch_size} is smaller than the {group.size} ranks: "
            "every rank needs at least one pair of each batch"
        )


def _session(
    loaded: ModelSession | None, model_spec: str | None, chat_template: str | Path | None, emit: Callable[[Event], None]
) -> ModelSession:
    """The model a run trains: the caller's session, else one loaded now; either takes the run's chat template."""
    if loaded is None:
        emit(Status("loading model"))
        loaded = load_model(model_spec)
    use_chat_template(loaded.tokenizer, chat_template)  # a caller's model (a round, the app) takes it too
    return loaded


def _train(data, model_spec, adapter_path, reference, resume, emit, cancel, loaded, tracker, settings) -> TrainResult:
    given, run, args, lora = _split_kwargs(settings)
    check_available(run.report_to)  # a tracker that is not installed: refused before anything loads
    adapter_dir = Path(adapter_path) if adapter_path else DEFAULT_ADAPTERS_DIR / time.strftime("dpo-%Y%m%d-%H%M%S")
    start = _start(adapter_dir, resume, reference, given, run, args, lora)
    args = start.args

    # A Hub dataset without ":split" gives its "train" split to train on and its "test" split to validate with.
    read = (
        (lambda src, split: kto_data(src, args, run.skip_invalid, emit, run.data_config, split))
        if is_kto(args)
        else (lambda src, split: (_pairs(src, run.skip_invalid, emit, run.data_config, split), None))
    )
    train_pairs, train_labels = read(data, "train")
    valid_pairs, valid_labels = read(run.valid_data, "test") if run.valid_data is not None else ([], None)
    if not train_pairs:
        raise MlxDpoError("no training pairs")
    group = distributed.group()
    if group.size > 1:
        _same_on_every_rank(group, start, run, train_pairs + valid_pairs)
        emit(Status(f"training on {group.size} ranks ({group.backend})"))

    loaded = _session(loaded, model_spec, run.chat_template, emit)
    limits = token_limits(loaded.config, run.max_length, run.max_prompt_length)
    encoder = Encoder(loaded.tokenizer, max_length=limits.max_length, max_prompt_length=limits.max_prompt_length)
    emit(Status("tokenizing", total=len(train_pairs) + len(valid_pairs)))
    train_enc = with_labels(_encode(encoder, train_pairs, run.skip_invalid, emit), train_labels)
    valid_enc = with_labels(_encode(encoder, valid_pairs, run.skip_invalid, emit), valid_labels)
    if not train_enc:
        raise MlxDpoError("no training pairs left after tokenization")
    for line in (
        plain_rows_note(loaded.tokenizer, loaded.name),
        limits.note,
        truncation_report(train_pairs + valid_pairs, train_enc + valid_enc, limits),
    ):
        if line:
            emit(Status(line))
    # Before the first forward pass: a run that cannot fit stops here with one line, not in swap or the OOM killer.
    emit(Status(memory.check_fits(loaded.model, loaded.config, train_enc, args, start.lora)))

    ref, stats, lora, fingerprint = _reference_pass(loaded, train_enc + valid_enc, start, emit)
    config = adapter_config(
        lora,
        loaded.model,
        loaded.name,
        extra={
            "init_adapter": str(start.init_adapter) if start.init_adapter else None,
            "reference": start.reference,
            "reference_fingerprint": fingerprint,
            "num_pairs": len(train_enc),
            "beta": args.beta,
            "loss_type": args.loss_type,
            "chat_template": str(run.chat_template) if run.chat_template else None,
        },
    )
    tracked = {
        "model": loaded.name,
        **flatten(args, lora),
        **{k: v for k, v in flatten(run).items() if not isinstance(v, (list, tuple))},
    }
    # Rank 0 alone writes the metrics (and tracks them).
    resume_step = checkpoint.read_state(start.resume_from)["step"] if start.resume_from else None
    writer = metrics_writer(run, adapter_dir, resume_step, emit, tracker, tracked) if group.is_writer else None
    eval_last: dict = {}

    def on_loop_event(event: Event) -> None:
        nonlocal eval_last
        if isinstance(event, EvalMetrics):
            eval_last = event.metrics
        (writer or emit)(event)

    cancelled = threading.Event() if cancel is None else cancel
    init_adapter = start.init_adapter
    try:
        last = train_loop(
            loaded.model,
            args,
            train_enc,
            ref,
            adapter_dir,
            config,
            valid_pairs=valid_enc,
            resume_from=start.resume_from,
            on_event=on_loop_event,
            cancel=cancelled,
            # Continuing from an adapter also continues its optimizer moments, when its run left them.
            optimizer_from=checkpoint.latest(Path(init_adapter)) if init_adapter and not resume else None,
            run_info=lambda: {
                REF_HITS: stats.hits,
                REF_MISSES: stats.misses,
                "ref_pass_seconds": round(stats.seconds, 3),
                "ranks": group.size,
            },
            checks=loaded.checks,
        )
    except BaseException:
        loaded.drop_training()  # a half-trained adapter is nobody's version
        raise
    finally:
        if writer is not None:
            writer.close()
    if cancelled.is_set():
        loaded.drop_training()  # its weights are past the last checkpoint's
        return TrainResult(adapter_dir, last, eval_last, stats, cancelled=True, rank=group.rank)
    loaded.trained(adapter_dir)
    emit(Finished(adapter_path=str(adapter_dir), metrics=last))
    return TrainResult(adapter_dir, last, eval_last, stats, rank=group.rank)


def _example_rows(pairs: list[EncodedPair], metrics: dict[str, mx.array], ref: RefLogps) -> list[dict]:
    """One `--per-example` row per pair; the `_`-keys feed the means and are not written."""
    values = {k: v.tolist() for k, v in metrics.items()}
    return [
        {
            "id": p.id,
            "policy_chosen_logp": values[LOGPS_CHOSEN][i],
            "policy_rejected_logp": values[LOGPS_REJECTED][i],
            "ref_chosen_logp": ref.values[p][0],
            "ref_rejected_logp": ref.values[p][1],
            "chosen_tokens": len(p.chosen),
            "rejected_tokens": len(p.rejected),
            "_accuracy": values[ACCURACY][i],
            "_margin": values[MARGIN][i],
            "_loss": values[LOSS][i],
        }
        for i, p in enumerate(pairs)
    ]


def evaluate(
    data: PairSource,
    *,
    model: str | None = None,
    adapter_path: str | Path | None = None,
    beta: float = TrainingArgs.beta,
    loss_type: str = TrainingArgs.loss_type,
    batch_size: int = TrainingArgs.batch_size,
    max_length: int | None = None,
    skip_invalid: bool = RunOptions.skip_invalid,
    data_config: str | None = None,
    per_example: str | Path | None = None,
    full_logits: bool = TrainingArgs.full_logits,
    shared_prompt: bool = TrainingArgs.shared_prompt,
    chat_template: str | Path | None = RunOptions.chat_template,
    on_event: Callable[[Event], None] | None = None,
    loaded: ModelSession | None = None,
    **loss_settings: Any,
) -> dict:
    """Preference accuracy, mean reward margin and loss of base + adapter against the base as reference (KTO:
    each answer against its label, kto_scores.py). `loaded`: a model session to score on (the adapter on it
    comes back on afterwards).

    `loss_settings` are the loss's own settings, named as in TrainingArgs (EVAL_LOSS_SETTINGS: label_smoothing,
    loss_weights, discopop_tau, ...), so a loss that needs one (exo_pair's ε) is scored as it trains.
    """
    unknown = sorted(set(loss_settings) - set(EVAL_LOSS_SETTINGS))
    if unknown:
        raise TypeError(f"unknown evaluation option(s): {', '.join(unknown)}")
    emit = on_event or (lambda e: None)
    # Built first: a bad setting is refused before anything loads.
    args = TrainingArgs(
        beta=beta,
        loss_type=loss_type,
        batch_size=batch_size,
        full_logits=full_logits,
        shared_prompt=shared_prompt,
        **loss_settings,
    )
    # KTO's examples are single answers marked good or bad, in the pair layout (method_data.py, kto_scores.py); a Hub
    # dataset gives its test split.
    if is_kto(args):
        pairs, labels = kto_data(data, args, skip_invalid, emit, data_config, default_split="test")
    else:
        pairs, labels = _pairs(data, skip_invalid, emit, data_config, default_split="test"), None
    loaded = loaded or load_model(model)
    use_chat_template(loaded.tokenizer, chat_template)
    # The limits training uses: eval of a long row must not take more memory than training it.
    limits = token_limits(loaded.config, max_length or RunOptions.max_length, RunOptions.max_prompt_length)
    encoder = Encoder(loaded.tokenizer, max_length=limits.max_length, max_prompt_length=limits.max_prompt_length)
    encoded = with_labels(encoder.encode_all(pairs, skip_invalid=skip_invalid)[0], labels)
    if not encoded:
        raise MlxDpoError("no pairs to evaluate")
    with loaded.base():
        cache = RefCache(model_fingerprint(loaded))
        try:
            ref, stats = reference_logps(
                loaded.model,
                encoded,
                cache,
                batch_size=2 * batch_size,
                shared_prompt=shared_prompt,
                full_logits=full_logits,
                on_event=emit,
                checks=loaded.checks,
            )
        finally:
            cache.close()
    with loaded.adapter(adapter_path or None):
        loaded.model.eval()
        batches = evaluate_batches(loaded.model, args, encoded, ref, emit, loaded.checks)
        if is_kto(args):
            result, rows = kto_scores(batches, ref, args.beta)
        else:
            rows = [row for _, chunk, metrics in batches for row in _example_rows(chunk, metrics, ref)]
            n = len(rows)
            result = {
                "accuracy": sum(r["_accuracy"] for r in rows) / n,
                "margin": sum(r["_margin"] for r in rows) / n,
                "loss": sum(r["_loss"] for r in rows) / n,
                "n_pairs": n,
            }
    result.update({REF_HITS: stats.hits, REF_MISSES: stats.misses})
    if per_example:
        with atomic_file(per_example, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n")
    return result
