"""Did a round help? Held-out numbers for one version of the adapter (or for the base), after each round.

  heldout/accuracy         preference accuracy on validation pairs: the share whose implicit reward
                           (beta * log pi/pi_base) is higher for the chosen answer (`run.evaluate`'s)
  heldout/margin           the mean implicit reward margin (chosen - rejected) on those pairs
  heldout/kl               KL(version || base), estimated from fresh samples y of the version on held-out
                           prompts x: the mean over samples of log pi(y|x) - log pi_base(y|x), nats per answer
  heldout/score            a score judge's mean score of the version's samples: the judge's own score
                           (`raw_score`), without the missing-end penalty, which only decides comparisons
                           (pairs, win rates: mlx_dpo.online.judges); cut answers have heldout/unfinished
  heldout/win_vs_previous  the judge's win rate of the version's samples against the previous (accepted) version's
  heldout/win_vs_base      ... and against the base's, on the same prompts (ties count half, skips not at all)
  heldout/repetition       degeneration: the mean over samples of the share of a sample's word 3-grams that repeat
                           an earlier 3-gram of the same sample (0 for varied prose; a repetition loop nears 1)
  heldout/unfinished       degeneration: the share of samples cut at max tokens (no end-of-turn token)
  heldout/samples          how many samples the score, the KL and the degeneration figures are means over
  heldout/compared_previous, heldout/compared_base: how many judged comparisons each win rate counts
  heldout/turn<D>/score, heldout/turn<D>/kl, heldout/turn<D>/samples: when the held-out prompts are conversations
                           of more than one depth, the score and the KL over the prompts that ask turn D (D user
                           messages), and their sample count (`by_turn`: no extra sampling or scoring pass)

The counts size the noise: one sample moves a mean of [0, 1] values by 1/samples, and a win rate's standard
error is at most 0.5/sqrt(compared) (mlx_dpo.training.acceptance uses them to tell a real loss from chance).

A number that cannot be measured (no validation pairs, no prompts, no judge, a person as the judge: nobody
is asked during a measurement) is None. The base against itself: accuracy 0.5 (its implicit rewards are all
0: no preference either way), margin 0, KL 0, no win rates. The accuracy and the KL are always against the *base*,
also for rounds trained with `reference="previous"`, so versions compare with each other along the run.

Log-probs come from the reference pass (`reference.reference_logps`: the training code's own batching and
log-prob path), with the version's adapter on, then with the base alone (`with session.adapter(...)`: the model
session puts back whatever was on, models/session.py), each cached under the model's fingerprint. A sampled
answer is scored as the chat template renders it (re-tokenized, ending with one end-of-turn token; an answer cut
at max tokens without one, as it was sampled), the same token sequence under both models.

Every version samples with the same seed (common random numbers): two versions' answers differ by their
weights, not by the dice. Each version's answers are kept in `<workspace>/heldout/<label>.json` (keyed by the
prompts and the sampler settings), so a round compares with the previous version's answers without sampling
it again, and the base is sampled and scored once per held-out set (`heldout/base.json`, its numbers also
copied into every round's record as `heldout_base/...`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlx_dpo.atomic import write_json
from mlx_dpo.data.answers import flags, is_finished, with_flags
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.events import Event, Status
from mlx_dpo.metric_names import (
    HELDOUT,
    HELDOUT_ACCURACY,
    HELDOUT_BASE,
    HELDOUT_COMPARED_BASE,
    HELDOUT_COMPARED_PREVIOUS,
    HELDOUT_KL,
    HELDOUT_MARGIN,
    HELDOUT_REPETITION,
    HELDOUT_SAMPLES,
    HELDOUT_SCORE,
    HELDOUT_UNFINISHED,
    HELDOUT_WIN_VS_BASE,
    HELDOUT_WIN_VS_PREVIOUS,
)
from mlx_dpo.models.adapter import adapter_weights
from mlx_dpo.models.generate import SampleSettings
from mlx_dpo.models.session import ModelSession
from mlx_dpo.online import free_reference
from mlx_dpo.online.rewards import repeated_share
from mlx_dpo.online.sampling import sample_answers
from mlx_dpo.settings import RoundSettings, TrainingArgs
from mlx_dpo.training import run
from mlx_dpo.training.ref_cache import RefCache, arrays_digest
from mlx_dpo.training.reference import reference_logps
from mlx_dpo.training.tokens import Encoder

if TYPE_CHECKING:  # the judge interface (mlx_dpo.online.judges); only its methods are used here
    from mlx_dpo.online.judges import Judge

Prompt = list[dict[str, str]]
Answers = list[list[str]]  # answers[i]: the samples for prompt i
KEYS = (
    HELDOUT_ACCURACY,
    HELDOUT_MARGIN,
    HELDOUT_KL,
    HELDOUT_SCORE,
    HELDOUT_WIN_VS_PREVIOUS,
    HELDOUT_WIN_VS_BASE,
    HELDOUT_REPETITION,
    HELDOUT_UNFINISHED,
    HELDOUT_SAMPLES,
    HELDOUT_COMPARED_PREVIOUS,
    HELDOUT_COMPARED_BASE,
)
BASE_KEYS = (
    HELDOUT_ACCURACY,
    HELDOUT_MARGIN,
    HELDOUT_KL,
    HELDOUT_SCORE,
    HELDOUT_REPETITION,
    HELDOUT_UNFINISHED,
    HELDOUT_SAMPLES,
)  # copied into each round's record as heldout_base/...
HELDOUT_DIR = "heldout"
HELDOUT_SEED = 0  # the same draws for every version (see the module docstring)
HELDOUT_BATCH = 64  # sequences sampled together: part of the draws (mlx_dpo.online.sampling), so fixed; 64 holds
# a 25-prompt x 2 set in one batch (a decode step costs about the same for 64 sequences as for 16 on CPU)
_KEPT_FORMAT = 2  # kept answer files: 2 adds each answer's finished flag (older files are sampled again)


def sample(
    session: ModelSession, adapter_path: str | Path | None, prompts: Sequence[Prompt], settings: SampleSettings, n: int
) -> Answers:
    """`n` answers per prompt from base + `adapter_path` (None: the base), with the held-out seed."""
    with session.adapter(adapter_path):
        samples = sample_answers(
            session, list(prompts), settings, n=n, seed=HELDOUT_SEED, batch_size=HELDOUT_BATCH, keep_logps=True
        )
        # Their log-probs under the model that sampled them, cached: the KL estimate's pass under it computes none.
        free_reference.keep(session, list(prompts), samples)
        return samples.answers


def answer_logps(
    loaded: ModelSession, prompts: Sequence[Prompt], answers: Answers, batch_size: int = 8
) -> dict[tuple[int, int], float]:
    """Summed log-prob of each answer (by (prompt, sample) index) under the model as it is now.

    Answers go two to a pair (a pair's two completions share its prompt pass); an odd one pairs with itself.
    An answer the template cannot hold (it contains the end-of-turn marker) is left out.
    """
    model = loaded.model
    digest = arrays_digest(adapter_weights(model)) if loaded.adapter_path is not None else None
    pairs, slots = [], {}
    for i, (prompt, group) in enumerate(zip(prompts, answers)):
        for j in range(0, len(group), 2):
            k = min(j + 1, len(group) - 1)
            pair = PreferencePair(f"{i}:{j}", list(prompt), group[j], group[k])
            pairs.append(pair)
            slots[pair.id] = ((i, j), (i, k))
    encoded, _ = Encoder(loaded.tokenizer).encode_all(pairs, skip_invalid=True)
    if not encoded:
        return {}
    cache = RefCache(run.model_fingerprint(loaded, digest))
    try:
        ref, _ = reference_logps(model, encoded, cache, batch_size=batch_size, checks=loaded.checks)
    finally:
        cache.close()
    out = {}
    for p in encoded:
        (first, second), values = slots[p.id], ref.values[p]
        out[first], out[second] = values
    return out


def kl_estimate(version: dict[tuple[int, int], float], base: dict[tuple[int, int], float]) -> float | None:
    """Mean of log pi(y|x) - log pi_base(y|x) over the samples scored under both."""
    both = [k for k in version if k in base]
    return sum(version[k] - base[k] for k in both) / len(both) if both else None


def mean_score(judge: Judge | None, prompts: Sequence[Prompt], answers: Answers) -> float | None:
    """A score judge's mean raw score of the answers, no missing-end penalty (None for other judges, or when it
    scored none)."""
    if judge is None or judge.kind != "score":
        return None
    scores = [judge.raw_score(prompt, a) for prompt, group in zip(prompts, answers) for a in group]
    scores = [s for s in scores if s is not None]
    return sum(scores) / len(scores) if scores else None


def win_rate(judge: Judge | None, prompts: Sequence[Prompt], answers: Answers, others: Answers | None) -> float | None:
    """How often the judge prefers `answers` to `others` (sample j against sample j of the same prompt);
    a tie counts half, a skip not at all. None without a program judge or anything to compare."""
    return wins(judge, prompts, answers, others)[0]


def wins(
    judge: Judge | None, prompts: Sequence[Prompt], answers: Answers, others: Answers | None
) -> tuple[float | None, int]:
    """(`win_rate`, how many comparisons it counts)."""
    if judge is None or judge.kind == "human" or not others:
        return None, 0
    items = [(prompt, a, b) for prompt, mine, theirs in zip(prompts, answers, others) for a, b in zip(mine, theirs)]
    if not items:
        return None, 0
    verdicts = judge.judge([p for p, _, _ in items], [(a, b) for _, a, b in items])
    choices = [v.choice for v in verdicts if v.choice is not None]
    return (sum({1: 1.0, 0: 0.5}.get(c, 0.0) for c in choices) / len(choices) if choices else None), len(choices)


def repetition(text: str) -> float:
    """The share of a text's word 3-grams that repeat an earlier 3-gram of the same text (0: none repeats)."""
    return repeated_share(text, 3)


def degeneration(answers: Answers) -> dict[str, float | None]:
    """The degeneration figures of a version's samples: mean repetition, share unfinished, and the sample count."""
    flat = [a for group in answers for a in group]
    if not flat:
        return {HELDOUT_REPETITION: None, HELDOUT_UNFINISHED: None, HELDOUT_SAMPLES: 0}
    return {
        HELDOUT_REPETITION: sum(repetition(a) for a in flat) / len(flat),
        HELDOUT_UNFINISHED: sum(not is_finished(a) for a in flat) / len(flat),
        HELDOUT_SAMPLES: len(flat),
    }


def kept_answers(kept: dict) -> Answers:
    """A kept file's answers (`<workspace>/heldout/<label>.json`), each an Answer knowing whether it finished."""
    return [with_flags(group, finished) for group, finished in zip(kept["answers"], kept["finished"])]


def heldout_metrics(
    loaded: ModelSession,
    *,
    adapter_path: str | Path | None,
    valid_pairs: Sequence[PreferencePair] = (),
    eval_prompts: Sequence[Prompt] = (),
    judge: Judge | None = None,
    answers: Answers | None = None,
    previous_answers: Answers | None = None,
    base_answers: Answers | None = None,
    sample_settings: SampleSettings | None = None,
    n: int = RoundSettings.heldout_samples,
    beta: float = TrainingArgs.beta,
    batch_size: int = TrainingArgs.batch_size,
) -> dict[str, float | None]:
    """The held-out numbers (KEYS) of base + `adapter_path` (None: the base itself).

    `answers`: the version's samples on `eval_prompts` (sampled here when None; `n` = 0 samples nothing);
    `previous_answers` / `base_answers`: the previous version's and the base's on the same prompts, for the
    judge's win rates. The adapter on `loaded` before is on it after.
    """
    settings = sample_settings or SampleSettings()
    prompts = list(eval_prompts)
    if adapter_path is None:
        answers = answers if answers is not None or not prompts or not n else sample(loaded, None, prompts, settings, n)
        return {
            HELDOUT_ACCURACY: 0.5 if valid_pairs else None,
            HELDOUT_MARGIN: 0.0 if valid_pairs else None,
            HELDOUT_KL: 0.0 if answers else None,
            HELDOUT_SCORE: mean_score(judge, prompts, answers or []),
            HELDOUT_WIN_VS_PREVIOUS: None,
            HELDOUT_WIN_VS_BASE: None,
            **degeneration(answers or []),
            HELDOUT_COMPARED_PREVIOUS: 0,
            HELDOUT_COMPARED_BASE: 0,
        }
    kl, mine, base_logps = None, {}, {}
    if prompts and n:
        answers = answers if answers is not None else sample(loaded, adapter_path, prompts, settings, n)
        with loaded.adapter(adapter_path):
            mine = answer_logps(loaded, prompts, answers, 2 * batch_size)
        with loaded.base():
            base_logps = answer_logps(loaded, prompts, answers, 2 * batch_size)
        kl = kl_estimate(mine, base_logps)
    scored = {}
    if valid_pairs:  # evaluate's reference pass runs on the base, its scores with the version on
        scored = run.evaluate(
            list(valid_pairs),
            loaded=loaded,
            adapter_path=adapter_path,
            beta=beta,
            batch_size=batch_size,
            skip_invalid=True,
        )
    answers = answers or []
    previous, compared_previous = wins(judge, prompts, answers, previous_answers)
    base, compared_base = wins(judge, prompts, answers, base_answers)
    return {
        HELDOUT_ACCURACY: scored.get("accuracy"),
        HELDOUT_MARGIN: scored.get("margin"),
        HELDOUT_KL: kl,
        HELDOUT_SCORE: mean_score(judge, prompts, answers),
        HELDOUT_WIN_VS_PREVIOUS: previous,
        HELDOUT_WIN_VS_BASE: base,
        **degeneration(answers),
        HELDOUT_COMPARED_PREVIOUS: compared_previous,
        HELDOUT_COMPARED_BASE: compared_base,
        **by_turn(judge, prompts, answers, mine, base_logps),
    }


def by_turn(
    judge: Judge | None,
    prompts: Sequence[Prompt],
    answers: Answers,
    version: dict[tuple[int, int], float],
    base: dict[tuple[int, int], float],
) -> dict[str, float | None]:
    """heldout/turn<D>/score, /kl and /samples for each turn depth D of the prompts (module docstring); nothing
    when every prompt asks the same turn (the overall numbers say it all)."""
    depths = [sum(m.get("role") == "user" for m in prompt) for prompt in prompts]
    if len(set(depths[: len(answers)])) < 2:
        return {}
    out: dict[str, float | None] = {}
    for depth in sorted(set(depths)):
        rows = [i for i, d in enumerate(depths) if d == depth and i < len(answers)]
        key = f"{HELDOUT}turn{depth}/"
        out[key + "score"] = mean_score(judge, [prompts[i] for i in rows], [answers[i] for i in rows])
        out[key + "kl"] = kl_estimate({k: v for k, v in version.items() if k[0] in rows}, base)
        out[key + "samples"] = sum(len(answers[i]) for i in rows)
    return out


@dataclass
class HeldoutSet:
    """What a workspace's rounds are measured on, and where each version's samples are kept."""

    workspace: Path
    prompts: list[Prompt]
    valid_pairs: list[PreferencePair]
    judge: Judge | None = None
    settings: SampleSettings = field(default_factory=SampleSettings)
    n: int = RoundSettings.heldout_samples
    beta: float = TrainingArgs.beta
    batch_size: int = TrainingArgs.batch_size
    given: int = 0  # how many prompts there were before --heldout-prompts capped them (0: not known)

    @property
    def left_out(self) -> str:
        """ "" or, when --heldout-prompts capped the prompts, what it left out (said in the measuring line)."""
        if self.given <= len(self.prompts):
            return ""
        return f" on the first {len(self.prompts)} of {self.given} held-out prompts (--heldout-prompts)"

    @property
    def key(self) -> str:
        """Which answers a kept file holds: the prompts, the sampler settings and the samples per prompt."""
        text = json.dumps(
            [self.prompts, asdict(self.settings), self.n, HELDOUT_SEED, _KEPT_FORMAT, HELDOUT_BATCH], sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def judge_name(self) -> str:
        return self.judge.name if self.judge is not None else ""

    def path(self, label: str) -> Path:
        return self.workspace / HELDOUT_DIR / f"{label}.json"

    def kept(self, label: str) -> dict[str, Any]:
        """The kept file of a version ("base", "v3") if it holds this set's answers, else {}."""
        try:
            data = json.loads(self.path(label).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("key") == self.key else {}

    def answers(
        self, loaded: ModelSession, label: str, adapter_path: str | Path | None, on_event: Callable[[Event], None]
    ) -> Answers | None:
        """A version's answers: kept ones, else sampled now and kept. None when nothing is sampled."""
        if not self.prompts or not self.n:
            return None
        kept = self.kept(label)
        if "answers" in kept:
            return kept_answers(kept)
        if adapter_path is not None and not Path(adapter_path).is_dir():
            return None  # a version whose folder is gone: nothing to compare with
        on_event(Status(f"held-out: sampling {self.n} answer(s) to {len(self.prompts)} prompt(s) from {label}"))
        answers = sample(loaded, adapter_path, self.prompts, self.settings, self.n)
        write_json(
            self.path(label),
            {"key": self.key, "answers": answers, "finished": [flags(group) for group in answers], "metrics": {}},
        )
        return answers

    def base_metrics(self, loaded: ModelSession, on_event: Callable[[Event], None]) -> dict[str, float | None]:
        """The base's numbers on this set (under this judge): measured once, then read from heldout/base.json."""
        answers = self.answers(loaded, "base", None, on_event)
        kept = self.kept("base")
        if self.judge_name in kept.get("metrics", {}):
            return kept["metrics"][self.judge_name]
        metrics = heldout_metrics(
            loaded,
            adapter_path=None,
            valid_pairs=self.valid_pairs,
            eval_prompts=self.prompts,
            judge=self.judge,
            answers=answers,
            n=self.n,
        )
        if kept:
            write_json(self.path("base"), {**kept, "metrics": {**kept["metrics"], self.judge_name: metrics}})
        return metrics


def measure_version(
    loaded: ModelSession,
    heldout: HeldoutSet,
    label: str,
    adapter_path: str | Path,
    previous: tuple[str, str | Path] | None,
    on_event: Callable[[Event], None] = lambda e: None,
) -> dict[str, float | None]:
    """A round's held-out numbers (KEYS) and the base's (as heldout_base/...). `previous`: the (label,
    adapter folder) of the version the round started from; None when it started from the base."""
    on_event(Status(f"held-out: measuring {label}{heldout.left_out}"))
    base = heldout.base_metrics(loaded, on_event)
    base_answers = heldout.answers(loaded, "base", None, on_event)
    previous_answers = heldout.answers(loaded, *previous, on_event) if previous else base_answers
    answers = heldout.answers(loaded, label, adapter_path, on_event)
    metrics = heldout_metrics(
        loaded,
        adapter_path=adapter_path,
        valid_pairs=heldout.valid_pairs,
        eval_prompts=heldout.prompts,
        judge=heldout.judge,
        answers=answers,
        previous_answers=previous_answers,
        base_answers=base_answers,
        sample_settings=heldout.settings,
        n=heldout.n,
        beta=heldout.beta,
        batch_size=heldout.batch_size,
    )
    return {**metrics, **{key.replace(HELDOUT, HELDOUT_BASE): value for key, value in base.items() if key in BASE_KEYS}}
