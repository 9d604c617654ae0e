"""Every setting of a training run, once: its name, default, help text and check, as dataclass fields.

    TrainingArgs   the optimisation and the preference loss
    LoraSettings   the adapter put on the model (named lora_<field>: lora_rank, lora_num_layers, ...)
    RunOptions     what a run reads and writes besides the pairs: validation pairs, a starting adapter,
                   token limits, the metrics file, a tracker (trackio)
    RoundSettings  what an incremental round adds (replay share, length by passes, reference, held-out)
    OnlineSettings what `mlx-dpo online` adds (rounds, prompts per round, answers per prompt)
    SampleSettings how answers are sampled (the app's sampler settings, `mlx-dpo online`'s and `generate`'s)

`mlx-dpo train`'s flags, the keys of its --config file, the keywords of `mlx_dpo.api.train`, the app's
Train fields and the settings a round records are all read from these fields (see `mlx_dpo.options`
for how), so changing a default or a rule here changes it everywhere; `--help` shows each class's flags
under its TITLE. A surface that starts from other defaults names them once here (ROUND_DEFAULTS,
ONLINE_SAMPLING). The classes check their values when built (SampleSettings when asked: `check()`).
No mlx import: the app's UI process reads these too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from mlx_dpo.options import (
    Check,
    OneOf,
    Setting,
    SettingError,
    at_least,
    check,
    check_fields,
    in_range,
    option,
    positive,
    rule,
    settings_of,
    with_defaults,
)

ACCEPT_MODES = ("always", "kl", "better")  # --accept: mlx_dpo.training.acceptance

# The losses by name, as TRL 1.16's DPOConfig.loss_type names them, then ours: cdpo (sigmoid with label
# smoothing, which TRL 1.16's sigmoid dropped), simpo, and the methods with trainers of their own in TRL
# (orpo: no reference; kto: single answers marked good or bad). Formulas: mlx_dpo/training/losses.py.
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
    "cdpo",
    "simpo",
    "orpo",
    "kto",
)
LABEL_SMOOTHING_LOSSES = ("cdpo", "robust", "exo_pair", "aot", "aot_unpaired")
REFERENCE_FREE = ("simpo", "orpo", "sft")  # no reference pass runs when every loss of a run is one of these
SOLO_LOSSES = ("orpo", "kto")  # their own trainers in TRL: not combined with other losses
SORTING_LOSSES = ("aot", "aot_unpaired")  # sort within the batch, so per-pair weights (WPO) would misalign
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
# The losses an f-divergence other than reverse KL applies to (TRL 1.16's DPOTrainer refuses the others, and so do
# we): f-DPO's reparameterization leaves a β·log Z(x) term that cancels only in the chosen − rejected difference of
# scores. sft reads no score; cdpo is our name for sigmoid with label smoothing.
F_DIVERGENCE_LOSSES = ("sigmoid", "cdpo", "robust", "hinge", "ipo", "exo_pair", "discopop", "sigmoid_norm", "sft")
REPORT_TO = ("none", "trackio")  # where a run's metrics go besides metrics.jsonl (mlx_dpo/tracking.py)


def loss_types(value: str | list | tuple) -> tuple[str, ...]:
    """ "sigmoid,sft" (or ["sigmoid", "sft"]) -> ("sigmoid", "sft"): the one reading of a loss_type setting."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(p).strip() for p in parts if str(p).strip())


def needs_reference(loss_type: str | list | tuple) -> bool:
    """Whether a run with these losses needs reference log-probs (a reference pass)."""
    return any(t not in REFERENCE_FREE for t in loss_types(loss_type))


class _LossNames(OneOf):
    """Each comma-separated name is a known loss; orpo and kto stand alone."""

    def __init__(self):
        super().__init__(LOSS_TYPES, "loss")
        self.problem = self._problem

    def _problem(self, value: Any, _values: Mapping[str, Any]) -> str | None:
        names = loss_types(value)
        unknown = [n for n in names if n not in LOSS_TYPES]
        if unknown or not names:
            self.unknown = unknown[0] if unknown else value
            return "unknown"
        if len(names) > 1 and any(n in SOLO_LOSSES for n in names):
            return "combines orpo or kto with other losses; they each train alone"
        if len(set(names)) != len(names):
            return "names a loss twice"
        return None

    def message(self, name: str, value: Any, reason: str, *, user: bool) -> str:
        if reason == "unknown":
            return super().message(name, getattr(self, "unknown", value), reason, user=user)
        return Check.message(self, name, value, reason, user=user)


def _loss_weights_problem(weights: list, values: Mapping[str, Any]) -> str | None:
    try:
        numbers = [float(w) for w in weights]
    except (TypeError, ValueError):
        return "must be numbers"
    if len(numbers) != len(loss_types(values["loss_type"])):
        return f"needs one weight per loss ({len(loss_types(values['loss_type']))})"
    return None if all(w >= 0 for w in numbers) else "must be at least 0"


def _ld_alpha_problem(alpha: float, values: Mapping[str, Any]) -> str | None:
    if not 0 <= alpha <= 1:
        return "must be in [0, 1]"
    return (
        "does not apply to kto (single answers have no shorter partner)"
        if "kto" in loss_types(values["loss_type"])
        else None
    )


def _weighting_problem(on: bool, values: Mapping[str, Any]) -> str | None:
    if on and any(n in SORTING_LOSSES + SOLO_LOSSES for n in loss_types(values["loss_type"])):
        return "(WPO) does not apply to --loss aot, aot_unpaired (they sort the batch), orpo or kto"
    return None


class _FDivergence(OneOf):
    """A known divergence, and reverse KL unless every loss of the run is one of F_DIVERGENCE_LOSSES."""

    def __init__(self):
        super().__init__(F_DIVERGENCES, "divergence")
        self.problem = self._problem

    def _problem(self, value: Any, values: Mapping[str, Any]) -> str | None:
        if value not in F_DIVERGENCES:
            return "unknown"
        others = [n for n in loss_types(values["loss_type"]) if n not in F_DIVERGENCE_LOSSES]
        if value != "reverse_kl" and others:
            return (
                f"applies only to the losses of a chosen − rejected score difference "
                f"({', '.join(F_DIVERGENCE_LOSSES)}), not {', '.join(others)}, as in TRL"
            )
        return None

    def message(self, name: str, value: Any, reason: str, *, user: bool) -> str:
        return (
            super().message(name, value, reason, user=user)
            if reason == "unknown"
            else Check.message(self, name, value, reason, user=user)
        )


# What `mlx-dpo export` and the app's Export screen can write (mlx_dpo.export), and GGUF's tensor types.
EXPORT_FORMATS = {"hf": "fused model folder", "peft": "PEFT LoRA adapter", "gguf": "fused model for llama.cpp"}
GGUF_TYPES = ("f16", "q8_0")


def _label_smoothing_problem(eps: float, values: Mapping[str, Any]) -> str | None:
    names = loss_types(values["loss_type"])
    if "exo_pair" in names and not 0 < eps < 1:
        return "must be in (0, 1) for exo_pair (the EXO paper uses 1e-3)"
    if any(n in LABEL_SMOOTHING_LOSSES for n in names):
        # At ε = 0.5 cdpo no longer depends on which answer is chosen, and robust divides by zero.
        return None if 0 <= eps < 0.5 else "must be in [0, 0.5)"
    if "sigmoid" in names and eps:
        return "is not part of TRL 1.16's sigmoid loss; use --loss cdpo for conservative DPO"
    # Silently ignoring it would let a user believe they trained with smoothing.
    return (
        None
        if eps == 0
        else f"applies only to loss types {', '.join(LABEL_SMOOTHING_LOSSES)}, not {values['loss_type']!r}"
    )


@dataclass
class TrainingArgs:
    """How the policy is optimised. A bool that is on by default is described by its --no- flag."""

    TITLE: ClassVar[str] = "training"

    iters: int | None = option(None, "optimizer steps", check=at_least(1), default_text="--epochs")
    epochs: float = option(1.0, "passes over the data", check=positive())
    batch_size: int = option(4, "pairs per micro-batch", check=at_least(1))
    grad_accum: int = option(1, "micro-batches per optimizer step", check=at_least(1))
    learning_rate: float = option(5e-5, "peak learning rate", check=positive())
    lr_schedule: str = option(
        "cosine", "cosine or constant, after warm-up", check=OneOf(("cosine", "constant"), "schedule")
    )
    warmup_steps: int = option(0, "linear warm-up steps", check=at_least(0))
    weight_decay: float = option(0.0, "AdamW weight decay", check=at_least(0))
    max_grad_norm: float = option(1.0, "gradient clipping norm; 0 disables", check=at_least(0))
    beta: float = option(0.1, "DPO beta", check=positive())
    # One name or several, comma-separated (TRL's list): "sigmoid,sft" trains on their weighted sum.
    loss_type: str = option(
        "sigmoid",
        f"{', '.join(LOSS_TYPES[:-1])} or {LOSS_TYPES[-1]}; several comma-separated add up",
        check=_LossNames(),
        flag="--loss",
    )
    loss_weights: list[float] | None = option(
        None, "comma-separated weight of each --loss", default_text="1 each", check=Check(_loss_weights_problem)
    )
    label_smoothing: float = option(
        0.0, "epsilon of cdpo, robust, exo_pair, aot", check=Check(_label_smoothing_problem)
    )
    f_divergence_type: str = option("reverse_kl", "f-DPO divergence: " + ", ".join(F_DIVERGENCES), check=_FDivergence())
    f_alpha_divergence_coef: float = option(0.5, "alpha of alpha_divergence")
    ld_alpha: float | None = option(
        None,
        "LD-DPO: weight of the tokens past the shorter answer's length",
        check=Check(_ld_alpha_problem),
        default_text="off",
    )
    use_weighting: bool = option(
        False, "WPO: weight each pair by its answers' probability under the policy", check=Check(_weighting_problem)
    )
    discopop_tau: float = option(0.05, "DiscoPOP temperature", check=positive())
    desirable_weight: float = option(1.0, "KTO: weight of answers marked good", check=positive())
    undesirable_weight: float = option(1.0, "KTO: weight of answers marked bad", check=positive())
    rpo_alpha: float = option(0.0, "RPO: weight of the chosen NLL term", check=at_least(0))
    simpo_gamma: float = option(0.5, "SimPO target margin")
    seed: int = option(0, "random seed", check=at_least(0))
    steps_per_report: int = option(10, "steps between metric reports", check=at_least(1))
    steps_per_eval: int = option(50, "steps between validation runs", check=at_least(1))
    save_every: int = option(100, "steps between checkpoints", check=at_least(1))
    grad_checkpoint: bool = option(False, "recompute activations in the backward pass to save memory")
    # On: each prompt runs once under both completions.
    shared_prompt: bool = option(True, "run each pair as two full sequences instead of sharing the prompt pass")
    # On: a batch's sequences lie side by side in as few rows as hold them (training/packed.py); prompts not shared.
    pack: bool = option(False, "pack each batch's sequences side by side into rows instead of padding each one")
    # On: only the completion positions are projected onto the vocabulary.
    full_logits: bool = option(False, "project every position onto the vocabulary (slower; for checking)")
    compile: bool = option(True, "do not mx.compile the training step")

    def __post_init__(self) -> None:
        check_fields(self)
        # One spelling each: the names as "a,b" text, the weights as numbers.
        self.loss_type = ",".join(loss_types(self.loss_type))
        if self.loss_weights is not None:
            self.loss_weights = [float(w) for w in self.loss_weights]

    @property
    def losses(self) -> tuple[str, ...]:
        return loss_types(self.loss_type)


@dataclass
class LoraSettings:
    """The LoRA/DoRA adapter. Saved in the adapter's config (`mlx_dpo.lora`) under these field names."""

    PREFIX: ClassVar[str] = "lora_"
    TITLE: ClassVar[str] = "LoRA adapter"

    rank: int = option(8, "LoRA rank", check=at_least(1))
    alpha: float = option(16.0, "LoRA alpha; scale = alpha / rank", check=positive())  # as in PEFT
    dropout: float = option(0.0, "LoRA dropout", check=in_range(0, 1))
    num_layers: int = option(
        -1,
        "adapt the last N blocks",
        flag="--lora-layers",
        default_text="all",
        check=rule(lambda n: n == -1 or n >= 1, "must be -1 (all) or at least 1"),
    )
    # e.g. ["self_attn.q_proj", "self_attn.v_proj"]; None: every linear layer
    keys: list[str] | None = option(
        None, "comma-separated projections, e.g. self_attn.q_proj,self_attn.v_proj", default_text="all"
    )
    dora: bool = option(False, "DoRA instead of LoRA", flag="--dora")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _template_file_problem(path: str | Path, _values: Mapping[str, Any]) -> str | None:
    return None if Path(path).expanduser().is_file() else "is not a file"


@dataclass
class RunOptions:
    """What a run reads and writes besides the training pairs, the model and the adapter folder."""

    TITLE: ClassVar[str] = "data and outputs"

    # A file, a dataset folder or a Hub dataset (owner/name[:split], default split "test"), or a list of pairs.
    valid_data: str | Path | list | None = option(
        None,
        "validation pairs: a JSONL or Parquet file, a dataset folder "
        "or a Hub dataset owner/name[:split] (default split: test)",
    )
    data_config: str | None = option(
        None, "which config (subset) of a Hub dataset or dataset folder to read", default_text="its default config"
    )
    init_adapter: str | Path | None = option(None, "start from this adapter (it becomes the reference)")
    # TRL's long-standing defaults (1024 / 512); the memory of a step grows with the square of the length.
    max_length: int = option(
        1024,
        "max prompt+answer tokens, at most the model's context length (config.json "
        "max_position_embeddings); longer answers keep their start",
        check=at_least(1),
    )
    max_prompt_length: int = option(
        512,
        "max prompt tokens, below --max-length; longer prompts keep their end; 0: "
        "never cut a prompt, refuse one that leaves no room for an answer",
        check=at_least(0),
    )
    skip_invalid: bool = option(False, "drop invalid rows instead of refusing to start")
    metrics_file: str | Path | None = option(None, "JSON Lines metrics", default_text="<adapter-path>/metrics.jsonl")
    # TRL's report_to: the metrics also go to this tracker (local; `trackio show`), under TRL's names.
    report_to: str = option(
        "none",
        "also log metrics to: none or trackio (pip install 'mlx-dpo[trackio]')",
        check=OneOf(REPORT_TO, "tracker"),
    )
    project: str | None = option(
        None,
        "the tracker's project; each run (a round: its version) is a run in it",
        default_text="the workspace's folder name, or mlx-dpo",
    )
    # A base model often has none: its rows are then plain text (mlx_dpo.training.tokens), conversations refused.
    chat_template: str | Path | None = option(
        None,
        "a Jinja chat template file for the model: one for a base model "
        "without a template, or one replacing the model's own",
        default_text="the model's",
        check=Check(_template_file_problem),
    )

    def __post_init__(self) -> None:
        check_fields(self)


def _max_steps_problem(steps: int, values: Mapping[str, Any]) -> str | None:
    if steps < 1:
        return "must be at least 1"
    return None if steps >= values["min_steps"] else f"must be at least --min-steps ({values['min_steps']})"


@dataclass
class RoundSettings:
    """What an incremental round (mlx_dpo.training.rounds) adds to a run's settings.

    A round's length follows its data: `passes` over its new + replayed pairs, kept within
    [min_steps, max_steps] (an `iters` given still sets it exactly). The defaults come from the experiment
    in benchmarks/rounds.py (benchmarks/README.md, "Rounds").
    """

    TITLE: ClassVar[str] = "rounds"

    replay: float = option(0.5, "with --incremental: share of older pairs replayed", check=at_least(0))
    passes: float = option(2.0, "a round's passes over its new + replayed pairs", check=positive())
    min_steps: int = option(2, "a round's fewest optimizer steps", check=at_least(1))
    max_steps: int = option(40, "a round's most optimizer steps", check=Check(_max_steps_problem))
    # "previous": DPO against the last finished version (its adapter on), cached under its fingerprint.
    reference: str = option(
        "base",
        "the reference of a round: base or previous (the last finished version)",
        check=OneOf(("base", "previous"), "reference"),
    )
    heldout_samples: int = option(
        2, "answers sampled per held-out prompt after a round (KL, judge); 0: none", check=at_least(0)
    )
    # 25 x 2 samples: one answer moves a mean score in [0, 1] by 0.02 at most (benchmarks/README.md, "Online rounds").
    heldout_prompts: int = option(
        25,
        "most held-out prompts measured after a round (the first ones; a round says when it leaves some out)",
        check=at_least(1),
    )
    # Whether a measured round is kept (mlx_dpo.training.acceptance); a rejected one is not built on.
    accept: str = option(
        "better",
        "keep a round: always, kl (within --kl-budget, no degeneration jump) or better "
        "(kl, and no loss to the previous version by the judge)",
        check=OneOf(ACCEPT_MODES, "accept rule"),
    )
    # 5 nats per answer: the bound for a sound demo; the win-rate and degeneration rules guard below it.
    kl_budget: float = option(
        5.0, "most KL to the base a kept round may reach, nats per held-out answer", check=positive()
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class OnlineSettings:
    """What `mlx-dpo online` (mlx_dpo.online.loop) adds to a round's settings: how many rounds, how many
    prompts each, how many answers per prompt. `rounds` counts this prompt file's rounds in the workspace,
    so the same command run again after a stop goes on to the same end."""

    TITLE: ClassVar[str] = "online rounds"

    rounds: int = option(
        3, "online rounds of this prompt file in the workspace (a restart goes on to the same count)", check=at_least(1)
    )
    per_round: int = option(8, "prompts sampled and judged per round", check=at_least(1))
    samples_per_prompt: int = option(
        4,
        "answers sampled per prompt: a score judge pairs the best with the worst, "
        "a prefer judge runs a knockout (a person always compares two)",
        check=at_least(2),
    )
    # TRL's missing_eos_penalty: subtracted from a score judge's score of an answer cut at max tokens.
    missing_end_penalty: float = option(
        1.0, "subtracted from a score judge's score of an answer cut at --max-tokens", check=at_least(0)
    )
    sample_batch_size: int = option(16, "sequences generated together when sampling", check=at_least(1))
    # Conversations (mlx_dpo.online.conversations): the judged pair's chosen answer becomes the assistant's turn.
    turns: int = option(
        1,
        "user turns judged per conversation: each chosen answer is continued with the row's next "
        '"follow_ups" message (else --follow-up)',
        check=at_least(1),
    )
    follow_up: str = option(
        "Go on.",
        'the next user message of a conversation whose row has no more "follow_ups"',
        check=rule(lambda s: bool(s.strip()), "must not be blank"),
    )
    shared_prefill: bool = option(True, "prefill a prompt again for each of its answers (slower; for checking)")
    free_reference: bool = option(
        True, "run the reference pass on answers the reference sampled (slower; for checking)"
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class SampleSettings:
    """How answers are sampled: the app's Label screen, `mlx-dpo generate` and `mlx-dpo online`.

    `seed=None` draws a fresh seed per request; in the app, slot 2 uses seed + 1; online rounds combine the seed
    with the round number. Checked on demand (`check()`), not when built, since the app's settings form builds
    one from what was typed and then asks what is wrong with it.
    """

    TITLE: ClassVar[str] = "sampling"

    temperature: float = option(
        0.7, "sampling temperature; 0 is greedy", check=rule(lambda t: 0 <= t <= 10, "must be between 0 and 10")
    )
    top_p: float = option(
        1.0,
        "nucleus sampling: keep the most likely tokens up to this total probability",
        check=rule(lambda p: 0 < p <= 1, "must be in (0, 1]"),
    )
    max_tokens: int = option(
        256, "longest answer in tokens", check=rule(lambda n: 1 <= n <= 32768, "must be between 1 and 32768")
    )
    # Its own name: a training run has a seed too (TrainingArgs.seed), and `online` takes both.
    seed: int | None = option(
        None,
        "sampler seed (online rounds combine it with the round number)",
        name="sample_seed",
        default_text="random",
        check=rule(lambda n: 0 <= n < 2**31, "must be between 0 and 2^31-1"),
    )

    def check(self) -> None:
        """Raise ValueError for the first bad field, named as a person reads it ("top-p", "max tokens")."""
        try:
            check_fields(self)
        except SettingError as e:
            raise ValueError(e.message(SAMPLE_LABELS[e.name])) from None

    def summary(self) -> str:
        seed = "random" if self.seed is None else str(self.seed)
        return (
            f"temp {self.temperature:g} · top-p {self.top_p:g} · max {self.max_tokens} tokens · seed {seed}"
            " · s to change"
        )

    def with_seed(self, seed: int | None) -> SampleSettings:
        return replace(self, seed=seed)


# The loss settings `mlx-dpo eval` / `api.evaluate` take besides beta and loss_type, so a loss that needs one
# (exo_pair's label_smoothing) is scored as it trains. ld_alpha is left out: its reference log-probs of
# completion prefixes come from training's reference pass.
EVAL_LOSS_SETTINGS = (
    "loss_weights",
    "label_smoothing",
    "f_divergence_type",
    "f_alpha_divergence_coef",
    "discopop_tau",
    "rpo_alpha",
    "simpo_gamma",
)

# A training run's settings; a round's add RoundSettings.
TRAIN_GROUPS = (RunOptions, TrainingArgs, LoraSettings)

# What a round (the app's, `train --incremental`, `online`) sets differently from a plain `train`, by setting name:
# save and report every step (a cancelled round keeps its last step's adapter; the app plots every step), an
# NLL anchor on the chosen answers (RPO; Iterative RPO calls it crucial for stability), and one pass at 1e-4: one pass
# at 1e-4 moved the judge's score as far per round as 2 passes, in half the steps; at 2e-4 every run's second round
# overshot --kl-budget (5.2-8.1 nats, 4 of 4 runs) (benchmarks/README.md, "Online rounds"). The surfaces that start
# rounds show these as the defaults.
ROUND_DEFAULTS: dict[str, Any] = {
    "save_every": 1,
    "steps_per_report": 1,
    "rpo_alpha": 1.0,
    "learning_rate": 1e-4,
    "passes": 1.0,
}
# How `mlx-dpo online` samples unless told otherwise (the app's Label screen keeps SampleSettings' own defaults,
# longer answers for a person to read): short enough to sample a round quickly on a laptop, long enough that the
# default model can finish an answer in it (benchmarks/README.md, "Online rounds").
ONLINE_SAMPLING = SampleSettings(temperature=0.8, max_tokens=96)
# How the sampler's settings are named in a message to a person using the app (its settings form's words).
SAMPLE_LABELS = {"temperature": "temperature", "top_p": "top-p", "max_tokens": "max tokens", "sample_seed": "seed"}


def round_settings_table(*groups: type) -> dict[str, Setting]:
    """The settings of `groups` as a round shows them: ROUND_DEFAULTS in place of the plain defaults."""
    return with_defaults(settings_of(*groups), ROUND_DEFAULTS)


def online_sampling_table() -> dict[str, Setting]:
    """The sampler's settings as `mlx-dpo online` shows them: ONLINE_SAMPLING's defaults (an unset seed is 0 there:
    online.sampling.run_seed)."""
    table = with_defaults(
        settings_of(SampleSettings),
        {name: getattr(ONLINE_SAMPLING, s.field) for name, s in settings_of(SampleSettings).items()},
    )
    return {**table, "sample_seed": replace(table["sample_seed"], default_text="0")}


def check_loss_settings(
    loss_type: str, beta: float, label_smoothing: float, f_divergence_type: str = TrainingArgs.f_divergence_type
) -> None:
    """The loss settings' rules, for callers of the loss functions (the checks TrainingArgs makes)."""
    check(
        {
            "loss_type": loss_type,
            "beta": beta,
            "label_smoothing": label_smoothing,
            "f_divergence_type": f_divergence_type,
        },
        settings_of(TrainingArgs),
    )
