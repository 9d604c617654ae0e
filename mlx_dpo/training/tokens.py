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

An answer cut at max tokens (an unfinished `Answer`, mlx_dpo.data.answers) is trained on its own tokens with
*no* end-of-turn token after them: the template's rendering cut just before its end-of-turn token. Appending one
would teach the model to stop mid-sentence where the cut fell (as chosen), or to go on past nothing in
particular (as rejected); its tokens without an end are exactly what the model sampled (up to re-tokenizing
the text), so their log-probability is the sample's. Leaving such answers out instead would throw away the
pairs that teach a model to finish within its budget (a finished answer chosen over a cut one).

A model without a chat template (a base model: Gemma 3 270M) gets its rows as TRL joins non-conversational
data (`plain_prompt`, `Encoder._plain_completion`): the prompt is the text, tokenized with the tokenizer's own
special tokens (BOS where it adds one); the completion is tokenize(prompt + answer) after the prompt's tokens,
and EOS ends it (TRL appends the EOS text unless the answer already ends with it; an answer cut at max
tokens gets none, as above). Only a prompt that is one
user message can be plain text; a conversation (a system message, several turns) is refused with one line
unless --chat-template supplies a template.

Long rows (`token_limits`, `Encoder._truncate`): --max-length is bounded by the model's context length
(config.json's max_position_embeddings or its kin), since positions past it were never trained and the
attention of one long row grows with the square of its length. A prompt over --max-prompt-length keeps
its end (the question usually comes last); answers keep their start, cut to what the prompt leaves of
--max-length. A prompt that leaves no room for an answer is refused with its line. Cutting happens on
token ids right after tokenizing, so nothing downstream ever holds a row longer than --max-length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jinja2 import TemplateError

from mlx_dpo.data.answers import is_finished
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError


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


NO_TEMPLATE = (
    "this model has no chat template, so a conversation (a system message or several turns) cannot be "
    "rendered; give the prompt as one string, or pass --chat-template FILE"
)


def has_chat_template(tokenizer) -> bool:
    """Whether the tokenizer renders conversations: mlx-lm's wrapper says; a transformers tokenizer by its
    template; any other object by having `apply_chat_template` at all."""
    flag = getattr(tokenizer, "has_chat_template", None)
    if isinstance(flag, bool):
        return flag
    if hasattr(tokenizer, "chat_template"):
        return tokenizer.chat_template is not None
    return callable(getattr(tokenizer, "apply_chat_template", None))


def plain_rows_note(tokenizer, model: str) -> str | None:
    """The run's Status line for a model without a chat template (None: it has one)."""
    if has_chat_template(tokenizer):
        return None
    return (
        f"{model} has no chat template: rows are plain text, joined as TRL joins them (prompt, answer, EOS); "
        "a conversation needs --chat-template FILE"
    )


def plain_prompt(messages: list[dict]) -> str:
    """The text of a prompt for a model without a chat template; MlxDpoError for a conversation."""
    if len(messages) != 1 or messages[0].get("role") != "user":
        raise MlxDpoError(NO_TEMPLATE)
    return messages[0]["content"]


class Encoder:
    """Tokenizes pairs with one tokenizer, template and truncation policy."""

    def __init__(self, tokenizer, max_length: int | None = None, max_prompt_length: int | None = None):
        self.tokenizer = tokenizer
        self.template = has_chat_template(tokenizer)
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.bos = tokenizer.bos_token_id
        # transformers warns "Token indices sequence length is longer than ... indexing errors" for a long row;
        # rows are cut right after tokenizing (`_truncate`) and the cut ones reported, so that warning misleads.
        warned = getattr(getattr(tokenizer, "_tokenizer", tokenizer), "deprecation_warnings", None)
        if isinstance(warned, dict):
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True
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
                raise _Problem(
                    f"field '{field}': contains the end-of-turn marker {marker!r}, which would end "
                    "the answer there; remove it from the text"
                )
        full = self._render(pair.prompt + [{"role": "assistant", "content": text}], add_generation_prompt=False)
        if full[: len(prompt_ids)] != prompt_ids:
            raise _Problem(
                f"field '{field}': the prompt's tokens are not a prefix of prompt + {field} "
                "(the chat template renders them differently)"
            )
        completion = full[len(prompt_ids) :]
        end = next((i for i, t in enumerate(completion) if t in self.end_of_turn), None)
        if not is_finished(text):  # cut at max tokens: its tokens, no end of turn (module docstring)
            completion = completion[:end]
        elif end is not None:
            completion = completion[: end + 1]
        else:
            completion.append(min(self.end_of_turn))
        if not completion[: len(completion) - is_finished(text)]:
            raise _Problem(f"field '{field}': no tokens besides the end-of-turn token")
        return completion

    def _plain_completion(self, prompt_text: str, prompt_ids: list[int], text: str, field: str) -> list[int]:
        """TRL's non-conversational rule: tokenize(prompt + answer) after the prompt's tokens, EOS at the end
        (none after an answer cut at max tokens, as with a template: see above)."""
        finished = is_finished(text)
        eos = self.tokenizer.eos_token_id if finished else None
        eos_text = self.tokenizer.decode([eos]) if eos is not None else ""
        if eos_text and text.endswith(eos_text):
            text = text[: -len(eos_text)]  # TRL does not add a second one
        for marker in self._end_of_turn_texts:
            if marker in text:
                raise _Problem(
                    f"field '{field}': contains the end-of-sequence marker {marker!r} before its end, "
                    "which would end the answer there; remove it from the text"
                )
        full = list(self.tokenizer.encode(prompt_text + text))
        if full[: len(prompt_ids)] != prompt_ids:
            raise _Problem(
                f"field '{field}': the prompt's last token and the answer's first merge into one token "
                "(e.g. a prompt ending in a space); move that text from the end of the prompt to the "
                "start of the answers"
            )
        completion = full[len(prompt_ids) :] + ([eos] if eos is not None else [])
        if not completion[: len(completion) - (eos is not None)]:
            raise _Problem(f"field '{field}': no tokens besides the end-of-sequence token")
        return completion

    def encode(self, pair: PreferencePair) -> EncodedPair:
        """Token ids for one pair; raises `MlxDpoError` naming the pair when it cannot be encoded."""
        try:
            if self.template:
                prompt = self._render(pair.prompt, add_generation_prompt=True)
                chosen = self._completion(pair, prompt, pair.chosen, "chosen")
                rejected = self._completion(pair, prompt, pair.rejected, "rejected")
            else:
                try:
                    text = plain_prompt(pair.prompt)
                except MlxDpoError as e:
                    raise _Problem(str(e)) from None
                prompt = list(self.tokenizer.encode(text))
                chosen = self._plain_completion(text, prompt, pair.chosen, "chosen")
                rejected = self._plain_completion(text, prompt, pair.rejected, "rejected")
        except _Problem as p:
            raise MlxDpoError(str(EncodeProblem(pair.id, pair.source, str(p)))) from None
        return self._truncate(pair, prompt, chosen, rejected)

    def _truncate(self, pair: PreferencePair, prompt: list[int], chosen: list[int], rejected: list[int]) -> EncodedPair:
        truncated = False
        if self.max_prompt_length and len(prompt) > self.max_prompt_length:
            prompt, truncated = prompt[-self.max_prompt_length :], True  # keep the prompt's end
        if self.max_length:
            if len(prompt) >= self.max_length:
                raise MlxDpoError(
                    str(
                        EncodeProblem(
                            pair.id,
                            pair.source,
                            f"prompt alone is {len(prompt)} tokens, not under --max-length {self.max_length}; "
                            "shorten it, or set --max-prompt-length to keep its end",
                        )
                    )
                )
            budget = self.max_length - len(prompt)
            if len(chosen) > budget or len(rejected) > budget:
                chosen, rejected, truncated = chosen[:budget], rejected[:budget], True  # keep the start
        return EncodedPair(pair.id, tuple(prompt), tuple(chosen), tuple(rejected), truncated)

    def encode_all(
        self, pairs: list[PreferencePair], skip_invalid: bool = False
    ) -> tuple[list[EncodedPair], list[str]]:
        """Encode every pair; problems are collected and raised together unless `skip_invalid`."""
        encoded, problems = [], []
        for pair in pairs:
            try:
                encoded.append(self.encode(pair))
            except MlxDpoError as e:
                problems.append(str(e))
        if problems and not skip_invalid and all(p.endswith(": " + NO_TEMPLATE) for p in problems):
            # Every row a conversation for a model without a template: one line naming them.
            where = ", ".join(p[: -len(NO_TEMPLATE) - 2] for p in problems[:10]) + (
                " and more" if problems[10:] else ""
            )
            raise MlxDpoError(f"{where}: {NO_TEMPLATE} (or --skip-invalid to drop such rows)")
        if problems and not skip_invalid:
            listed = "\n".join(problems[:20]) + (f"\n... and {len(problems) - 20} more" if len(problems) > 20 else "")
            raise MlxDpoError(
                f"{len(problems)} pair(s) cannot be tokenized:\n{listed}\n(use --skip-invalid to drop them)"
            )
        return encoded, problems


class _Problem(Exception):
    pass


# Where configs keep the longest sequence a model was trained for, in the order they are looked up.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length", "n_ctx")


def context_length(config: Mapping) -> tuple[int, str] | None:
    """The model's context length and the config key it came from, or None when the config names none."""
    for where in (config, config.get("text_config") or {}):  # multimodal configs nest the text model's
        for key in CONTEXT_KEYS:
            value = where.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, key
    return None


@dataclass(frozen=True)
class TokenLimits:
    max_length: int | None
    max_prompt_length: int | None  # None: prompts are never cut (a prompt that does not fit is refused)
    note: str | None = None  # why a limit given is lower than asked, for the run's Status line


def token_limits(config: Mapping, max_length: int | None, max_prompt_length: int | None) -> TokenLimits:
    """The limits a run encodes with: --max-length bounded by the model's context length, and
    --max-prompt-length below --max-length (0 or None: never cut a prompt)."""
    note = None
    context = context_length(config)
    if context and (max_length is None or max_length > context[0]):
        if max_length is not None:
            note = (
                f"--max-length {max_length} is above the model's context length {context[0]} "
                f"(config.json {context[1]}): rows are cut to {context[0]} tokens"
            )
        max_length = context[0]
    prompt = max_prompt_length or None
    if prompt and max_length and prompt >= max_length:
        prompt = max_length - 1  # at least one answer token must fit
    return TokenLimits(max_length, prompt, note)


# Template tokens a rendering adds around the texts (role markers, a default system line): generous.
_TEMPLATE_TOKENS = 64


def may_exceed(pair: PreferencePair, limits: TokenLimits) -> bool:
    """False when the pair surely fits whole, judged without a tokenizer: a token holds at least one byte of
    text (byte-level BPE, or SentencePiece with byte fallback), so tokens <= UTF-8 bytes + the template's."""
    size = lambda text: len(text.encode("utf-8"))  # noqa: E731
    prompt = sum(size(m["content"]) for m in pair.prompt) + _TEMPLATE_TOKENS
    answer = max(size(pair.chosen), size(pair.rejected)) + _TEMPLATE_TOKENS
    return bool(
        (limits.max_prompt_length and prompt > limits.max_prompt_length)
        or (limits.max_length and prompt + answer > limits.max_length)
    )


def rows_over_limits(
    pairs: Sequence[PreferencePair], tokenizer, limits: TokenLimits
) -> list[tuple[PreferencePair, int]]:
    """The pairs training would cut or refuse, each with its length in tokens (prompt + longer answer).

    Only rows `may_exceed` flags are tokenized; a row that cannot be tokenized at all is left to `train`,
    which names its problem."""
    whole = Encoder(tokenizer)
    over = []
    for pair in pairs:
        if not may_exceed(pair, limits):
            continue
        try:
            e = whole.encode(pair)
        except MlxDpoError:
            continue
        tokens = len(e.prompt) + max(len(e.chosen), len(e.rejected))
        if (limits.max_length and tokens > limits.max_length) or (
            limits.max_prompt_length and len(e.prompt) > limits.max_prompt_length
        ):
            over.append((pair, tokens))
    return over


def truncation_report(
    pairs: Sequence[PreferencePair], encoded: Sequence[EncodedPair], limits: TokenLimits
) -> str | None:
    """One line naming the rows that were cut (how many, which lines), or None when none was."""
    cut = {e.id for e in encoded if e.truncated}
    if not cut:
        return None
    where = [p.source or f"pair {p.id}" for p in pairs if p.id in cut]
    shown = ", ".join(where[:10]) + (f" and {len(where) - 10} more" if len(where) > 10 else "")
    prompt = f", prompts to {limits.max_prompt_length} keeping their end" if limits.max_prompt_length else ""
    return (
        f"{len(cut)} row(s) longer than the limits were cut (rows to --max-length {limits.max_length} tokens, "
        f"answers keeping their start{prompt}): {shown}"
    )


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
    after = text[text.rindex(_PROBE) + len(_PROBE) :]
    ids = tokenizer.encode(after, add_special_tokens=False) if after.strip() else []
    special = set(getattr(tokenizer, "all_special_ids", None) or []) | set(
        getattr(tokenizer, "added_tokens_decoder", None) or {}
    )
    return {ids[0]} if ids and ids[0] in special else set()
