"""An LLM as the judge (`--judge llm:MODEL --rubric TEXT|FILE`): a local mlx-lm model asked which of two
answers is better, once in each order, because LLM judges favour a position.

How it is asked, and how its answer is read:
- One user message (the judge model's chat template): the rubric, the conversation so far, "Answer 1:",
  "Answer 2:", and "Reply with 1 or 2 only." (`question`).
- No text is generated. The judge's answer is the next token after the template's generation prompt: the
  log-probability of "1" against "2" (each the log-sum-exp over the ways the tokenizer spells the digit as one
  token, with and without a leading space). Free text can ramble, refuse or say "Answer 1" in ten ways; the
  two log-probs always exist and compare. Equal log-probs are a tie for that order.
- Both orders: (A, B) and (B, A). If the two readings pick the same answer that is the verdict; if they
  disagree (the judge followed the position, not the answer) or either is a tie, the verdict is a tie (0).
  `Verdict.scores` holds each answer's probability of being picked (of "1" vs "2"), averaged over the orders.

Only the last position of each question goes through the vocabulary projection (the model's own head,
`compat.output_head`), and only when the training code's self-check found that path equal to the
model's own forward (`training.fast_path`); otherwise each question runs through the plain forward alone.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from mlx_dpo.compat import output_head
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.generate import prompt_tokens
from mlx_dpo.models.load import load_model
from mlx_dpo.models.session import ModelSession
from mlx_dpo.online.verdict import Judge, Messages, Verdict, check_lengths
from mlx_dpo.training.fast_path import fast_paths

DEFAULT_RUBRIC = (
    "You judge answers written by an assistant. Decide which answer serves the user better: "
    "correct, helpful, clear and to the point."
)
BATCH = 8  # questions per forward pass


def _conversation(messages: Messages) -> str:
    """The chat so far as plain text; a single user message is shown as it is."""
    if len(messages) == 1:
        return messages[0].get("content", "")
    return "\n\n".join(f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}" for m in messages)


def question(rubric: str, messages: Messages, first: str, second: str) -> list[dict[str, str]]:
    """The judge model's chat for one order of one pair."""
    text = (
        f"{rubric}\n\n### Conversation\n{_conversation(messages)}\n\n### Answer 1\n{first}\n\n"
        f"### Answer 2\n{second}\n\nWhich answer is better? Reply with 1 or 2 only."
    )
    return [{"role": "user", "content": text}]


def digit_ids(tokenizer, digit: str) -> list[int]:
    """The single tokens that spell `digit` (bare and with a leading space)."""
    ids = set()
    for text in (digit, " " + digit):
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    if not ids:
        raise MlxDpoError(f"the judge model's tokenizer has no single token for {digit!r}; choose another llm: model")
    return sorted(ids)


def next_token_logprobs(loaded: ModelSession, sequences: list[list[int]]) -> list[np.ndarray]:
    """log p(next token | sequence) over the vocabulary, for each sequence (right-padded, in batches)."""
    model = loaded.model
    if fast_paths(model, loaded.checks).head_problem is not None:  # the model's own forward, one sequence at a time
        return [np.array(_log_softmax(model(mx.array([seq]))[0, -1]), copy=False) for seq in sequences]
    head, out = output_head(model), []
    for start in range(0, len(sequences), BATCH):
        chunk = sequences[start : start + BATCH]
        width = max(len(s) for s in chunk)
        inputs = np.zeros((len(chunk), width), np.int32)  # right padding: a causal model never sees it
        for i, seq in enumerate(chunk):
            inputs[i, : len(seq)] = seq
        hidden = model.model(mx.array(inputs))
        last = mx.array([len(s) - 1 for s in chunk])[:, None, None]
        states = mx.take_along_axis(hidden, last, axis=1)  # (n, 1, D): only the position that answers
        logps = _log_softmax(head(states)[:, 0])
        mx.eval(logps)
        out.extend(np.array(row) for row in logps)
    return out


def _log_softmax(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def order_choice(lp1: float, lp2: float) -> int:
    """One order's reading: 1 or 2, the answer in that position the judge picks; 0 when it cannot tell."""
    return 1 if lp1 > lp2 else 2 if lp2 > lp1 else 0


def both_orders(ab: tuple[float, float], ba: tuple[float, float]) -> Verdict:
    """The verdict from the log-probs of ("1", "2") asked as (A, B) and as (B, A).

    The same answer picked in both orders wins; a disagreement or a tie in either order is a tie.
    """
    first, second = order_choice(*ab), order_choice(*ba)
    swapped = {1: 2, 2: 1, 0: 0}[second]  # in (B, A), "1" names B
    choice = first if first == swapped else 0
    p_ab, p_ba = _p_first(*ab), _p_first(*ba)
    scores = ((p_ab + (1 - p_ba)) / 2, ((1 - p_ab) + p_ba) / 2)
    agreed = "both orders agree" if choice else "the orders disagree: a tie" if first and swapped else "a tie"
    return Verdict(choice, scores, f"A-B says {first or 'tie'}, B-A says {swapped or 'tie'} ({agreed})")


def _p_first(lp1: float, lp2: float) -> float:
    top = max(lp1, lp2)
    return math.exp(lp1 - top) / (math.exp(lp1 - top) + math.exp(lp2 - top))


class LlmJudge(Judge):
    """`llm:MODEL`: the model loaded once (with `models.load.load_model`, as `--model` loads it)."""

    kind = "llm"

    def __init__(self, model: str, rubric: str | None = None, *, loaded: ModelSession | None = None) -> None:
        self.model_spec = model
        self.name = f"llm:{model}"
        self.rubric = rubric or DEFAULT_RUBRIC
        self.loaded = loaded if loaded is not None else load_model(model)  # "default": the default model
        tokenizer = self.loaded.tokenizer
        self.ids = (digit_ids(tokenizer, "1"), digit_ids(tokenizer, "2"))

    def ask(self, prompts: list[Messages], pairs: list[tuple[str, str]]) -> list[tuple[tuple[float, float], ...]]:
        """For each pair, the log-probs of ("1", "2") in order (A, B), then in order (B, A)."""
        tokenizer = self.loaded.tokenizer
        sequences = [
            prompt_tokens(tokenizer, question(self.rubric, p, x, y))
            for p, (a, b) in zip(prompts, pairs)
            for x, y in ((a, b), (b, a))
        ]
        rows = next_token_logprobs(self.loaded, sequences)
        readings = [tuple(float(np.logaddexp.reduce(row[ids])) for ids in self.ids) for row in rows]
        return [(readings[2 * i], readings[2 * i + 1]) for i in range(len(pairs))]

    def judge(self, prompts: list[Messages], pairs: list[tuple[str, str]]) -> list[Verdict]:
        check_lengths(self, prompts, pairs)
        return [both_orders(ab, ba) for ab, ba in self.ask(prompts, pairs)]
