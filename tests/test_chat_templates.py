"""Pairs to tokens through the families' own chat templates (tests/templates/, on small local tokenizers).

What a completion must be: the tokens the template renders after the prompt, up to and including the
token the template ends the answer's turn with; the prompt: the rendering with the generation prompt, one
BOS where the family has one. Gemma 3 folds a system message into the first user turn; Gemma 2 has no
system role and the pair is refused with what to do. A base model without a template (Gemma 3 270M) reads
plain-text rows as TRL joins them, refuses conversations, and takes a template from --chat-template.
"""

from __future__ import annotations

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import pytest
from chat_tokenizers import CHAT_FAMILIES, TEMPLATES, load_chat_tokenizer, make_chat_tokenizer
from helpers import system, user

from mlx_dpo.data.pairs import PreferencePair
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.training.tokens import Encoder

END_OF_ANSWER = {
    "qwen2": "<|im_end|>",
    "gemma3": "<end_of_turn>",
    "gemma2": "<end_of_turn>",
    "llama3": "<|eot_id|>",
    "phi3": "<|end|>",
}
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


@pytest.mark.parametrize(
    "family, bos", [("gemma3", "<bos>"), ("llama3", "<|begin_of_text|>"), ("qwen2", None), ("phi3", None)]
)
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
    assert text(tok, encoded.prompt) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHello! How are you today?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert text(tok, encoded.chosen) == "I am fine, thank you.<end_of_turn>"


def test_gemma2_has_no_system_role_and_says_what_to_do(tokenizers):
    tok = tokenizers["gemma2"]
    with pytest.raises(MlxDpoError) as info:
        Encoder(tok).encode(pair([system("Be brief."), *PROMPT]))
    message = str(info.value)
    assert message.startswith("pair p1: the chat template cannot render this conversation: System role not supported")
    assert "put the instructions in the first user message" in message and "\n" not in message
    assert Encoder(tok).encode(pair([user("Be brief.\n\nHello! How are you today?")])).chosen  # as suggested


# --- a base model without a chat template ---------------------------------------------------------------------------
# Rows are joined as TRL joins non-conversational data: prompt_ids = tokenize(prompt) (BOS where the tokenizer adds
# one), completion = tokenize(prompt + answer) after them, then EOS (unless the answer's text already ends with it).


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return load_chat_tokenizer(make_chat_tokenizer("gemma3_base", tmp_path_factory.mktemp("base") / "gemma3_base"))


def plain(prompt="The capital of France is", chosen=" Paris.", rejected=" Rain.") -> PreferencePair:
    return PreferencePair("p1", [user(prompt)], chosen, rejected)


def test_a_plain_row_is_joined_as_trl_joins_non_conversational_data(base):
    assert not base.has_chat_template
    encoded = Encoder(base).encode(plain())
    prompt = base.encode("The capital of France is")
    assert prompt[0] == base.bos_token_id and prompt.count(base.bos_token_id) == 1  # the tokenizer's own BOS
    assert list(encoded.prompt) == prompt
    for answer, ids in ((" Paris.", encoded.chosen), (" Rain.", encoded.rejected)):
        assert list(ids) == base.encode("The capital of France is" + answer)[len(prompt) :] + [base.eos_token_id]
        assert text(base, ids) == answer + "<eos>"


def test_an_answer_that_already_ends_with_eos_gets_no_second_one(base):
    encoded = Encoder(base).encode(plain(chosen=" Paris.<eos>"))
    assert text(base, encoded.chosen) == " Paris.<eos>" and list(encoded.chosen).count(base.eos_token_id) == 1
    with pytest.raises(MlxDpoError, match=r"^pair p1: field 'chosen': contains the end-of-sequence marker '<eos>'"):
        Encoder(base).encode(plain(chosen=" Paris.<eos> More."))


@pytest.mark.parametrize(
    "prompt",
    [[system("Be brief."), user("Hi")], [user("Hi"), {"role": "assistant", "content": "Hello."}, user("And?")]],
    ids=["system-message", "several-turns"],
)
def test_a_conversation_is_refused_in_one_line_without_a_template(base, prompt):
    with pytest.raises(MlxDpoError) as info:
        Encoder(base).encode(PreferencePair("p1", prompt, "Yes.", "No."))
    assert str(info.value) == (
        "pair p1: this model has no chat template, so a conversation (a system message or "
        "several turns) cannot be rendered; give the prompt as one string, or pass "
        "--chat-template FILE"
    )


def test_a_file_of_conversations_is_refused_in_one_line_naming_its_rows(base):
    rows = [
        PreferencePair(f"p{i}", [system("Be brief."), user("Hi")], "Yes.", "No.", source=f"pairs.jsonl:{i + 1}")
        for i in range(2)
    ]
    with pytest.raises(MlxDpoError) as info:
        Encoder(base).encode_all([*rows, plain()])
    assert str(info.value) == (
        "pairs.jsonl:1, pairs.jsonl:2: this model has no chat template, so a conversation (a "
        "system message or several turns) cannot be rendered; give the prompt as one string, "
        "or pass --chat-template FILE (or --skip-invalid to drop such rows)"
    )
    encoded, problems = Encoder(base).encode_all([*rows, plain()], skip_invalid=True)
    assert len(encoded) == 1 and len(problems) == 2


def test_a_prompt_whose_end_merges_into_the_answer_is_refused_not_cut_wrong(base):
    # "is " + "Paris" tokenizes as "is" "ĠParis": the prompt's own last token ("Ġ") is not a prefix. TRL warns and
    # cuts at the prompt's length, dropping the answer's first token; this says what to move instead.
    assert base.encode("The capital of France is ")[-1] != base.encode("The capital of France is Paris")[-2]
    with pytest.raises(MlxDpoError, match=r"merge into one token .* move that text from the end of the prompt"):
        Encoder(base).encode(plain(prompt="The capital of France is ", chosen="Paris.", rejected="Rain."))


def test_a_chat_template_file_gives_a_base_model_a_template(base, tmp_path):
    from mlx_dpo.models.load import use_chat_template

    tok = load_chat_tokenizer(make_chat_tokenizer("gemma3_base", tmp_path / "tok"))
    template = tmp_path / "gemma3.jinja"
    template.write_text((TEMPLATES / "gemma3.jinja").read_text())
    use_chat_template(tok, template)
    assert tok.has_chat_template
    encoded = Encoder(tok).encode(PreferencePair("p1", [system("Be brief."), *PROMPT], "Fine.", "No."))
    assert text(tok, encoded.chosen) == "Fine.<end_of_turn>"
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m.content }")
    with pytest.raises(MlxDpoError, match=rf"^--chat-template {bad}:1: not a valid Jinja template \("):
        use_chat_template(tok, bad)


def test_generation_continues_the_prompt_text_and_says_no_template_applies(base):
    from types import SimpleNamespace

    from mlx_dpo.models.generate import prompt_tokens, template_note

    assert prompt_tokens(base, [user("Once upon")]) == base.encode("Once upon")
    with pytest.raises(MlxDpoError, match="this model has no chat template"):
        prompt_tokens(base, [system("Be brief."), user("Once upon")])
    note = template_note(SimpleNamespace(name="gemma-3-270m-q4_k_m.gguf", tokenizer=base))
    assert note == (
        "gemma-3-270m-q4_k_m.gguf has no chat template: no template applies, the prompt is continued as "
        "plain text (--chat-template FILE gives it one)"
    )


def test_chat_template_is_one_setting_from_cli_to_api(tmp_path):
    from helpers import assert_clean_error, run_cli

    from mlx_dpo.options import settings_of
    from mlx_dpo.settings import RunOptions

    setting = settings_of(RunOptions)["chat_template"]
    assert (setting.flag, setting.default) == ("--chat-template", None)
    result = run_cli("generate", "--prompt", "hi", "--chat-template", str(tmp_path / "none.jinja"))
    assert result.returncode == 2
    assert_clean_error(result, f"--chat-template is not a file (got {tmp_path / 'none.jinja'})")
