"""Every setting of a training run, once: its name, default, help text and check, as dataclass fields.

    TrainingArgs   the optimisation and the preference loss
    LoraSettings   the adapter put on the model (named lora_<field>: lora_rank, lora_num_layers, ...)
    RunOptions     what a run reads and writes besides the pairs: validation pairs, a starting adapter,
                   token limits, the metrics file
    RoundSettings  what an incremental round adds (the replay share)

`mlx-dpo train`'s flags, the keys of its --config file, the keywords of `mlx_dpo.api.train`, the app's
Train fields and the settings a round records are all read from these fields (see `mlx_dpo.options`
for how), so changing a default or a rule here changes it everywhere. The classes check their values
when built. No mlx import: the app's UI process reads these too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from mlx_dpo.options import Check, OneOf, at_least, check, check_fields, in_range, option, positive, rule, settings_of

# The preference losses by name; their formulas are in mlx_dpo/training/losses.py.
LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo", "simpo")
LABEL_SMOOTHING_LOSSES = ("sigmoid", "robust")


def _label_smoothing_problem(eps: float, values: Mapping[str, Any]) -> str | None:
    loss_type = values["loss_type"]
    if loss_type in LABEL_SMOOTHING_LOSSES:
        # At ε = 0.5 the sigmoid loss no longer depends on which answer is chosen, and robust divides by zero.
        return None if 0 <= eps < 0.5 else "must be in [0, 0.5)"
    # Silently ignoring it would let a user believe they trained with smoothing.
    return None if eps == 0 else f"applies only to loss types {', '.join(LABEL_SMOOTHING_LOSSES)}, not {loss_type!r}"


@dataclass
class TrainingArgs:
    """How the policy is optimised. A bool that is on by default is described by its --no- flag."""

    iters: int | None = option(None, "optimizer steps", check=at_least(1), default_text="--epochs")
    epochs: float = option(1.0, "passes over the data", check=positive())
    batch_size: int = option(4, "pairs per micro-batch", check=at_least(1))
    grad_accum: int = option(1, "micro-batches per optimizer step", check=at_least(1))
    learning_rate: float = option(5e-5, "peak learning rate", check=positive())
    lr_schedule: str = option("cosine", "cosine or constant, after warm-up", check=OneOf(("cosine", "constant"), "schedule"))
    warmup_steps: int = option(0, "linear warm-up steps", check=at_least(0))
    weight_decay: float = option(0.0, "AdamW weight decay", check=at_least(0))
    max_grad_norm: float = option(1.0, "gradient clipping norm; 0 disables", check=at_least(0))
    beta: float = option(0.1, "DPO beta", check=positive())
    loss_type: str = option("sigmoid", f"{', '.join(LOSS_TYPES[:-1])} or {LOSS_TYPES[-1]}",
                            check=OneOf(LOSS_TYPES, "loss"), flag="--loss")
    label_smoothing: float = option(0.0, "conservative/robust DPO epsilon", check=Check(_label_smoothing_problem))
    rpo_alpha: float = option(0.0, "RPO: weight of the chosen NLL term", check=at_least(0))
    simpo_gamma: float = option(0.5, "SimPO target margin")
    seed: int = option(0, "random seed", check=at_least(0))
    steps_per_report: int = option(10, "steps between metric reports", check=at_least(1))
    steps_per_eval: int = option(50, "steps between validation runs", check=at_least(1))
    save_every: int = option(100, "steps between checkpoints", check=at_least(1))
    grad_checkpoint: bool = option(False, "recompute activations in the backward pass to save memory")
    # On: each prompt runs once under both completions.
    shared_prompt: bool = option(True, "run each pair as two full sequences instead of sharing the prompt pass")
    # On: only the completion positions are projected onto the vocabulary.
    full_logits: bool = option(False, "project every position onto the vocabulary (slower; for checking)")
    compile: bool = option(True, "do not mx.compile the training step")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class LoraSettings:
    """The LoRA/DoRA adapter. Saved in the adapter's config (`mlx_dpo.lora`) under these field names."""

    PREFIX: ClassVar[str] = "lora_"

    rank: int = option(8, "LoRA rank", check=at_least(1))
    alpha: float = option(16.0, "LoRA alpha; scale = alpha / rank", check=positive())  # as in PEFT
    dropout: float = option(0.0, "LoRA dropout", check=in_range(0, 1))
    num_layers: int = option(-1, "adapt the last N blocks", flag="--lora-layers", default_text="all",
                             check=rule(lambda n: n == -1 or n >= 1, "must be -1 (all) or at least 1"))
    # e.g. ["self_attn.q_proj", "self_attn.v_proj"]; None: every linear layer
    keys: list[str] | None = option(None, "comma-separated projections, e.g. self_attn.q_proj,self_attn.v_proj",
                                    default_text="all")
    dora: bool = option(False, "DoRA instead of LoRA", flag="--dora")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass
class RunOptions:
    """What a run reads and writes besides the training pairs, the model and the adapter folder."""

    valid_data: str | Path | list | None = option(None, "validation pairs (JSON Lines)")  # or a list of pairs
    init_adapter: str | Path | None = option(None, "start from this adapter (it becomes the reference)")
    max_length: int | None = option(None, "max prompt+completion tokens; completions are cut at the end",
                                    check=at_least(1))
    max_prompt_length: int | None = option(None, "max prompt tokens; prompts keep their end", check=at_least(1))
    skip_invalid: bool = option(False, "drop invalid rows instead of refusing to start")
    metrics_file: str | Path | None = option(None, "JSON Lines metrics", default_text="<adapter-path>/metrics.jsonl")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class RoundSettings:
    """What an incremental round (mlx_dpo.training.rounds) adds to a run's settings."""

    replay: float = option(0.5, "with --incremental: share of older pairs replayed", check=at_least(0))

    def __post_init__(self) -> None:
        check_fields(self)


# A training run's settings; a round's add RoundSettings.
TRAIN_GROUPS = (RunOptions, TrainingArgs, LoraSettings)


def check_loss_settings(loss_type: str, beta: float, label_smoothing: float) -> None:
    """The loss settings' rules, for callers of the loss functions (the checks TrainingArgs makes)."""
    check({"loss_type": loss_type, "beta": beta, "label_smoothing": label_smoothing}, settings_of(TrainingArgs))
