"""The model session: one loaded model, which adapter is on it, and what its self-checks found.

    session = load_model("my-model")             # mlx_dpo.models.load
    with session.adapter("adapters/v2"):           # v2 on for this block ...
        answers = sample_answers(session, prompts, settings)
    # ... and the adapter that was on before is back, also when the block raised

Every caller that runs the model goes through a session: training and evaluation, the held-out measurement,
sampling, label review, export, the online loop, the demo and the app's model worker. Nobody else puts an
adapter on or takes it off, so which adapter is on is always `session.adapter_path`, and a function that needs
a version for a while says so with `with session.adapter(path)` instead of promising in its docstring which
adapter it leaves behind. `use_adapter` changes the version for good (the app's choice, the version a round
leaves on); `train_adapter` puts on the adapter a run trains.

Putting a version on costs an adapter file's read (the base's layers are unwrapped and wrapped again, in place;
models.adapter), not a reload of the base.

What the self-checks found (training/fast_path.py's log-prob paths, online/sampling.py's batched generation) is
kept in `session.checks`, measured once per loaded model, not stored on the nn.Module.

MLX streams are thread-local (arrays made on one thread cannot be evaluated on another): a session is used on
the thread that loaded it (the app's model worker owns its session on its own thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlx.nn as nn

from mlx_dpo.models.adapter import add_adapter, fuse_adapter, load_adapter, remove_adapter
from mlx_dpo.names import display_name
from mlx_dpo.settings import LoraSettings

if TYPE_CHECKING:  # the probe's findings, typed where they are measured
    from mlx_dpo.training.fast_path import FastPaths

_UNCHECKED = "unchecked"


@dataclass
class SelfChecks:
    """What the self-checks found on one loaded model (adapters come and go; the findings hold for the base)."""

    fast_paths: FastPaths | None = None  # training/fast_path.py: which log-prob fast paths reproduce the model
    # The requests whose Status line was said: (shared_prompt, full_logits), and ("pack", full_logits) for packed rows.
    announced: set[tuple[bool | str, bool]] = field(default_factory=set)
    batching: str | None = _UNCHECKED  # online/sampling.py: why batched generation is off (None: it is on)
    shared_prefill: str | None = _UNCHECKED  # online/sampling.py: why each answer prefills its prompt (None: shared)
    free_reference: str | None = _UNCHECKED  # online/free_reference.py: why sampled log-probs are not kept (None: kept)
    packing: str | None = _UNCHECKED  # training/fast_path.py: why pairs are not packed into rows (None: packed)
    pack_found: tuple[int, float] = (4, 0.0)  # the packed forward's mask layout and worst error on the probe

    @property
    def batching_checked(self) -> bool:
        return self.batching != _UNCHECKED

    def unchecked(self, name: str) -> bool:
        """Whether the check kept as `name` (shared_prefill, free_reference) has not run on this model yet."""
        return getattr(self, name) == _UNCHECKED


def _same(a: str | Path | None, b: str | Path | None) -> bool:
    """The same adapter folder (None: no adapter), however the path is written."""
    if a is None or b is None:
        return a is b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


class ModelSession:
    """One loaded base model and its tokenizer, the adapter on it, and its self-checks' findings.

    Built by `mlx_dpo.models.load.load_model`. Use it on the thread that loaded it.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, path: Path, config: dict, name: str, quantized: bool
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer  # mlx_lm.tokenizer_utils.TokenizerWrapper
        self.path = path  # the mlx-lm model folder
        self.config = config
        self.name = name  # what the user asked for, or the default's name
        self.quantized = quantized  # quantized layers kept (Metal/CUDA); False once dequantized on CPU
        self.extra: dict = {}
        self.checks = SelfChecks()
        self._adapter: Path | None = None
        self._settings: LoraSettings | None = None
        self._training = False  # the adapter on is being trained: its weights are only in memory
        self._fused = False  # the adapter on is folded into the base's weights (export): it cannot come off

    def __repr__(self) -> str:
        return f"ModelSession({self.name!r}, adapter={self._adapter})"

    @property
    def adapter_path(self) -> Path | None:
        """The adapter folder on the model (None: the base alone); during training, the one it started from."""
        return self._adapter

    @property
    def adapter_settings(self) -> LoraSettings | None:
        """The LoRA settings of the adapter on (None: the base alone)."""
        return self._settings

    @contextmanager
    def adapter(self, path: str | Path | None) -> Iterator[ModelSession]:
        """`path`'s adapter on (None: the base alone) for the block; the adapter that was on goes back on after it,
        also when the block raises. If `path` does not load, the adapter that was on stays on and the error is raised.
        """
        if self._training:  # its weights are nowhere on disk to put back
            raise RuntimeError("an adapter in training cannot be swapped for another; save it first")
        previous = self._adapter
        self.use_adapter(path)
        try:
            yield self
        finally:
            self.use_adapter(previous)

    def base(self) -> AbstractContextManager[ModelSession]:
        """`with session.base():` the base model alone for the block (`adapter(None)`)."""
        return self.adapter(None)

    def use_adapter(self, path: str | Path | None) -> LoraSettings | None:
        """Put `path`'s adapter on (None: the base alone) from now on, in place of the one that was on.

        If the new adapter does not load, the one that was on goes back on before the error is raised.
        Putting on the adapter already on does nothing.
        """
        if not self._training and _same(path, self._adapter):
            return self._settings
        if self._fused:
            raise RuntimeError(f"{self._adapter} is fused into this model's weights; load the base again")
        previous = None if self._training else self._adapter
        self._take_off()
        if path is None:
            return None
        try:
            return self._put_on(path)
        except Exception:
            self._take_off()
            if previous is not None:
                self._put_on(previous)
            raise

    def train_adapter(self, start: str | Path | None, settings: LoraSettings) -> LoraSettings:
        """Put on the adapter a run trains: `start`'s (its settings are the adapter's own), else a fresh one with
        `settings` (LoRA's A matrices are drawn from MLX's random state: seed it first). Returns its settings.

        Until `trained` names where it was saved, the session cannot swap it for another.
        """
        if start is not None:
            settings = self.use_adapter(start)
        else:
            self.use_adapter(None)
            add_adapter(self.model, settings)
            self._settings = settings
        self._training = True
        return settings

    def trained(self, folder: str | Path) -> None:
        """The adapter in training is the one saved in `folder` (a run's adapter folder) from now on."""
        self._adapter, self._training = Path(folder).expanduser(), False
        self.model.eval()

    def fuse(self, *, dequantize: bool) -> int:
        """Fold the adapter on into the base's layers for good (an export); returns how many layers were fused.
        The session then holds the fused model: no other adapter can go on it."""
        count = fuse_adapter(self.model, dequantize=dequantize)
        self._fused = True
        return count

    def drop_training(self) -> None:
        """A run that failed or was cancelled: its half-trained adapter (past its last checkpoint) comes off,
        leaving the base alone."""
        self._training = False
        self._take_off()

    def _take_off(self) -> None:
        remove_adapter(self.model)
        self._adapter, self._settings = None, None

    def _put_on(self, path: str | Path) -> LoraSettings:
        """The one loader (models.adapter.load_adapter), for inference: eval mode (no dropout)."""
        settings = load_adapter(self.model, path, base=display_name(self.name))
        self.model.eval()
        self._adapter, self._settings = Path(path).expanduser(), settings
        return settings
