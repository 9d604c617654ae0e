"""Preference pairs to token ids through the model's chat template.

The prompt is rendered with the generation prompt; prompt + completion is rendered as a full
conversation. A completion's tokens are the full rendering's tokens after the prompt's, cut just
after the template's first end-of-turn token (SmolLM's "<|im_end|>\n" keeps "<|im_end|>"; a
template that adds EOS after the turn, "<|end|>\n<|endoftext|>", keeps "<|end|>"). So every
completion ends with exactly one end-of-turn token; a text that holds the end-of-turn marker
itself is reported, not cut short.

The end-of-turn tokens are the tokenizer's EOS ids plus the special token the template itself writes
right after an answer (found once by rendering a probe answer): a model's config may list only
"<eos>" while Gemma's template ends a turn with "<end_of_turn>\n", and the completion must be what
the template renders, not the template's text plus an EOS it never writes. Only a template that
writes nothing after an answer gets EOS appended. Templates without a system role (Gemma 2) are
refused per pair with what to do; Gemma 3's template folds the system message in by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.data.pairs import PreferencePair


@dataclass(frozen=True)
class EncodedPair:
    id: str
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    truncated: bool = False
    # A KTO example (mlx_dpo.training.methods): its completion is `chosen`, marked good (True) or bad;
    # `rejected` is another example's completion, for the KL reference point. None for a pair.
    desirable: bool | None = None

    @property
    def num_tokens(self) -> int:
        return 2 * len(self.prompt) + len(self.chosen) + len(self.rejected)


@dataclass(frozen=True)
class EncodeProblem:
    pair_id: str
    source: str | None
    message: str

    def __str__(self) -> str:
        where = self.source or f"pair {self.pair_id}"
        return f"{where}: {self.message}"


class Encoder:
    """Tokenizes pairs with one tokenizer, template and truncation policy."""

    def __init__(self, tokenizer, max_length: int | None = None, max_prompt_length: int | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.bos = tokenizer.bos_token_id
        # The template's end-of-turn markers: the tokenizer's EOS (mlx-lm may list several) and the
        # special token the template writes after an answer.
        self.end_of_turn = set(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])
        self.end_of_turn |= template_end_of_turn(tokenizer)
        self.end_of_turn.discard(None)
        # The end-of-turn markers as text ("<|im_end|>"): a completion holding one would end the turn early.
        decode = getattr(tokenizer, "decode", None)
        self._end_of_turn_texts = (
            sorted({text for text in (decode([t]) for t in self.end_of_turn) if text.strip()}) if decode else []
        )

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> list[int]:
        try:
            ids = list(
                self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
            )
        except TemplateError as e:  # e.g. a template that raises "System role not supported"
            hint = ""
            if messages and messages[0].get("role") == "system" and "system" in str(e).lower():
                hint = "; this model's template has no system role: put the instructions in the first user message"
            raise _Problem(f"the chat template cannot render this conversation: {e}{hint}") from None
        if self.bos is not None and len(ids) > 1 and ids[0] == ids[1] == self.bos:
            ids = ids[1:]  # template and tokenizer both added BOS
        return ids

    def _completion(self, pair: PreferencePair, prompt_ids: list[int], text: str, field: str) -> list[int]:
        for marker in self._end_of_turn_texts:
            if marker in text:
                raise _Problem(f"field '{field}': contains the end-of-turn marker {marker!r}, which would end "
                               "the answer there; remove it from the text")
        full = self._render(pair.prompt + [{"role": "assistant", "content": text}], add_generation_prompt=False)
        if full[: len(prompt_ids)] != prompt_ids:
            raise _Problem(f"field '{field}': the prompt's tokens are not a prefix of prompt + {field} "
                           "(the chat template renders them differently)")
        completion = full[len(prompt_ids):]
        end = next((i for i, t in enumerate(completion) if t in self.end_of_turn), None)
        if end is not None:
            completion = completion[: end + 1]
        else:
            completion.append(min(self.end_of_turn))
        if not completion[:-1]:
            raise _Problem(f"field '{field}': no tokens besides the end-of-turn token")
        return completion

    def encode(self, pair: PreferencePair) -> EncodedPair:
        """Token ids for one pair; raises `MlxDpoError` naming the pair when it cannot be encoded."""
        try:
            prompt = self._render(pair.prompt, add_generation_prompt=True)
            chosen = self._completion(pair, prompt, pair.chosen, "chosen")
            rejected = self._completion(pair, prompt, pair.rejected, "rejected")
        except _Problem as p:
            raise MlxDpoError(str(EncodeProblem(pair.id, pair.source, str(p)))) from None
        return self._truncate(pair, prompt, chosen, rejected)

    def _truncate(self, pair: PreferencePair, prompt: list[int], chosen: list[int], rejected: list[int]) -> EncodedPair:
        truncated = False
        if self.max_prompt_length and len(prompt) > self.max_prompt_length:
            prompt, truncated = prompt[-self.max_prompt_length:], True  # keep the prompt's end
        if self.max_length:
            if len(prompt) >= self.max_length:
                raise MlxDpoError(str(EncodeProblem(
                    pair.id, pair.source,
                    f"prompt alone is {len(prompt)} tokens, not under --max-length {self.max_length}",
                )))
            budget = self.max_length - len(prompt)
            if len(chosen) > budget or len(rejected) > budget:
                chosen, rejected, truncated = chosen[:budget], rejected[:budget], True  # keep the start
        return EncodedPair(pair.id, tuple(prompt), tuple(chosen), tuple(rejected), truncated)

    def encode_all(self, pairs: list[PreferencePair], skip_invalid: bool = False) -> tuple[list[EncodedPair], list[str]]:
        """Encode every pair; problems are collected and raised together unless `skip_invalid`."""
        encoded, problems = [], []
        for pair in pairs:
            try:
                encoded.append(self.encode(pair))
            except MlxDpoError as e:
                problems.append(str(e))
        if problems and not skip_invalid:
            listed = "\n".join(problems[:20]) + (f"\n... and {len(problems) - 20} more" if len(problems) > 20 else "")
            raise MlxDpoError(f"{len(problems)} pair(s) cannot be tokenized:\n{listed}\n"
                              "(use --skip-invalid to drop them)")
        return encoded, problems


class _Problem(Exception):
    pass


_PROBE = "Probe answer 7"


def template_end_of_turn(tokenizer) -> set[int]:
    """The special token a chat template writes right after an assistant's answer (empty: none, or unknown)."""
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    except (TemplateError, ValueError, TypeError, AttributeError):
        return set()
    if not isinstance(text, str) or _PROBE not in text:
        return set()
    after = text[text.rindex(_PROBE) + len(_PROBE):]
    ids = tokenizer.encode(after, add_special_tokens=False) if after.strip() else []
    special = set(getattr(tokenizer, "all_special_ids", None) or []) | set(
        getattr(tokenizer, "added_tokens_decoder", None) or {})
    return {ids[0]} if ids and ids[0] in special else set()
