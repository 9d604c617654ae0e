"""Pairs to tokens through the families' own chat templates (tests/templates/, on small local tokenizers).

What a completion must be: the tokens the template renders after the prompt, up to and including the
token the template ends the answer's turn with; the prompt: the rendering with the generation prompt, one
BOS where the family has one. Gemma 3 folds a system message into the first user turn; Gemma 2 has no
system role and the pair is refused with what to do.
"""

from __future__ import annotations

import pytest

import mlx_dpo  # noqa: F401

from chat_tokenizers import CHAT_FAMILIES, load_chat_tokenizer, make_chat_tokenizer
from helpers import system, user
from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.training.tokens import Encoder

END_OF_ANSWER = {"qwen2": "<|im_end|>", "gemma3": "<end_of_turn>", "gemma2": "<end_of_turn>",
                 "llama3": "<|eot_id|>", "phi3": "<|end|>"}
PROMPT = [user("Hello! How are you today?")]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("chat-tokenizers")
    return {family: load_chat_tokenizer(make_chat_tokenizer(family, root / family)) for family in CHAT_FAMILIES}


def pair(prompt=PROMPT, chosen="I am fine, thank you.", rejected="No.") -> PreferencePair:
    return PreferencePair("p1", list(prompt), chosen, rejected)


def rendered(tok, messages, generation_prompt: bool) -> str:
    return tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def text(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False)


@pytest.mark.parametrize("family", list(CHAT_FAMILIES))
def test_a_completion_is_what_the_template_renders_after_the_prompt_up_to_its_end_of_turn(tokenizers, family):
    tok = tokenizers[family]
    encoded = Encoder(tok).encode(pair())
    prompt_text = rendered(tok, PROMPT, True)
    assert text(tok, encoded.prompt) == prompt_text
    for answer, ids in (("I am fine, thank you.", encoded.chosen), ("No.", encoded.rejected)):
        full = rendered(tok, PROMPT + [{"role": "assistant", "content": answer}], False)
        assert text(tok, ids) == answer + END_OF_ANSWER[family]
        assert full.startswith(text(tok, encoded.prompt + ids))  # nothing the template does not write
        assert list(ids).count(tok.convert_tokens_to_ids(END_OF_ANSWER[family])) == 1


def test_gemma2s_end_of_turn_counts_though_its_config_lists_only_eos(tokenizers):
    tok = tokenizers["gemma2"]
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn not in tok.eos_token_ids  # config.json: eos_token_id = <eos> only
    encoded = Encoder(tok).encode(pair())
    assert encoded.chosen[-1] == end_of_turn and tok.convert_tokens_to_ids("<eos>") not in encoded.chosen


@pytest.mark.parametrize("family, bos", [("gemma3", "<bos>"), ("llama3", "<|begin_of_text|>"), ("qwen2", None),
                                         ("phi3", None)])
def test_the_prompt_starts_with_one_bos_where_the_family_has_one(tokenizers, family, bos):
    tok = tokenizers[family]
    prompt = Encoder(tok).encode(pair()).prompt
    if bos is None:
        assert tok.bos_token_id is None and prompt[0] != tok.convert_tokens_to_ids("<|endoftext|>")
    else:
        bos_id = tok.convert_tokens_to_ids(bos)
        assert prompt[0] == bos_id and prompt.count(bos_id) == 1
    if family == "llama3":  # template and tokenizer both add it: kept once
        assert tok.encode("Hi")[0] == tok.convert_tokens_to_ids(bos)


def test_no_pad_token_is_needed(tokenizers):
    tok = tokenizers["llama3"]
    assert tok.pad_token_id is None
    encoded, problems = Encoder(tok).encode_all([pair(), pair(chosen="Fine.")])
    assert problems == [] and len(encoded) == 2


def test_a_system_message_replaces_qwens_default_one(tokenizers):
    tok = tokenizers["qwen2"]
    default = text(tok, Encoder(tok).encode(pair()).prompt)
    assert "You are Qwen" in default
    own = text(tok, Encoder(tok).encode(pair([system("Be brief."), *PROMPT])).prompt)
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and "You are Qwen" not in own


def test_gemma3_folds_the_system_message_into_the_first_user_turn(tokenizers):
    tok = tokenizers["gemma3"]
    encoded = Encoder(tok).encode(pair([system("Be brief."), *PROMPT]))
    assert text(tok, encoded.prompt) == ("<bos><start_of_turn>user\nBe brief.\n\nHello! How are you today?"
                                         "<end_of_turn>\n<start_of_turn>model\n")
    assert text(tok, encoded.chosen) == "I am fine, thank you.<end_of_turn>"


def test_gemma2_has_no_system_role_and_says_what_to_do(tokenizers):
    tok = tokenizers["gemma2"]
    with pytest.raises(MlxDpoError) as info:
        Encoder(tok).encode(pair([system("Be brief."), *PROMPT]))
    message = str(info.value)
    assert message.startswith("pair p1: the chat template cannot render this conversation: System role not supported")
    assert "put the instructions in the first user message" in message and "\n" not in message
    assert Encoder(tok).encode(pair([user("Be brief.\n\nHello! How are you today?")])).chosen  # as suggested
