"""Small local tokenizer folders carrying the families' real chat templates (tests/templates/*.jinja).

Each is a byte-level BPE of ~400 tokens trained here on a few sentences, with the family's special tokens
as added tokens, its BOS/EOS/pad choices and the end-of-sequence ids its config.json lists (what mlx-lm
reads as `eos_token_ids`). The vocabulary is not the family's; the template text, the special tokens and
the BOS/EOS/pad layout are, and those are what turning a conversation into tokens depends on.
"""

from __future__ import annotations

import json
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"
VOCAB_SIZE = 512  # the tiny models' vocabulary: room for the ~400 tokens trained plus the specials

# family -> special tokens (in id order, from 0), bos, eos (tokenizer_config), pad, config.json's eos ids,
# whether the tokenizer itself prepends BOS.
CHAT_FAMILIES: dict[str, dict] = {
    # Qwen2.5-Instruct: ChatML, a default system message, no BOS, "<|im_end|>\n" after each turn.
    "qwen2": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        eos_ids=["<|im_end|>", "<|endoftext|>"],
        add_bos=False,
    ),
    # Gemma 3: BOS from the template, the system message folded into the first user turn.
    "gemma3": dict(
        specials=["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        eos_ids=["<eos>", "<end_of_turn>"],
        add_bos=False,
    ),
    # Gemma 2: no system role (the template raises); config.json lists only <eos>, not <end_of_turn>.
    "gemma2": dict(
        specials=["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        eos_ids=["<eos>"],
        add_bos=False,
    ),
    # Llama 3: BOS from both the template and the tokenizer, no pad token, "<|eot_id|>" ends a turn.
    "llama3": dict(
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        eos_ids=["<|end_of_text|>", "<|eot_id|>"],
        add_bos=True,
    ),
    # Phi-3: "<|end|>\n" after each turn, then the EOS "<|endoftext|>" after the conversation.
    "phi3": dict(
        specials=["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        bos=None,
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        eos_ids=["<|endoftext|>"],
        add_bos=False,
    ),
}

# A base model's tokenizer: no chat template, BOS added by the tokenizer itself (as Gemma 3 270M's GGUF says).
BASE_FAMILIES: dict[str, dict] = {
    "gemma3_base": dict(
        specials=["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        eos_ids=["<eos>"],
        add_bos=True,
        template=None,
    ),
}

_CORPUS = [
    "The capital of France is Paris. Rain falls on the roof; the river runs to the sea.",
    "You are a helpful assistant. Answer briefly and politely, in plain words.",
    "List three prime numbers: 2, 3 and 5. Write a haiku about rain and the moon.",
    "Hello! How are you today? I am fine, thank you. Blue sky, green grass, red sun.",
]


def make_chat_tokenizer(family: str, out: Path) -> Path:
    """Write tokenizer.json, tokenizer_config.json and config.json (its eos ids) for `family` into `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    spec = CHAT_FAMILIES[family] if family in CHAT_FAMILIES else BASE_FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=spec["specials"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    ids = {t: tok.token_to_id(t) for t in spec["specials"]}
    if spec["add_bos"]:
        bos = spec["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])]
        )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": spec["bos"],
        "eos_token": spec["eos"],
        "pad_token": spec["pad"],
        "add_bos_token": spec["add_bos"],
        "add_eos_token": False,
        "model_max_length": 4096,
    }
    template = spec.get("template", family)
    if template:
        config["chat_template"] = (TEMPLATES / f"{template}.jinja").read_text(encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    model_config = {"eos_token_id": [ids[t] for t in spec["eos_ids"]], "vocab_size": VOCAB_SIZE}
    if spec["bos"]:
        model_config["bos_token_id"] = ids[spec["bos"]]
    (out / "config.json").write_text(json.dumps(model_config), encoding="utf-8")
    return out


def load_chat_tokenizer(folder: Path):
    """mlx-lm's tokenizer for the folder, with the eos ids of its config.json (as mlx-dpo loads a model's)."""
    from mlx_lm.utils import load_tokenizer

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return load_tokenizer(folder, eos_token_ids=config["eos_token_id"])
