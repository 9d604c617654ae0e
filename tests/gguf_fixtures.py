"""Tiny llama GGUF files written the way llama.cpp's converter writes them, with the independent `gguf` package.

The converter under test (`mlx_dpo.models.gguf`) is not used here: names, the Q/K row permutation, metadata
and the byte-level BPE vocabulary are all spelled out again, so a mistake on either side shows up.

Every tensor type the importer reads can be written: the ones the `gguf` package quantizes (Q4_0, Q4_1, Q5_0,
Q5_1, Q8_0, BF16, F16) from the float weights, the k-quants (which it only dequantizes) as crafted blocks:
random bytes with sane f16 scale fields (`craft_k_quant`). Either way the expected weights are the `gguf`
package's own dequantization of the bytes written. k-quant blocks hold 256 values, so those files use WIDE,
whose rows are 256 long.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx_dpo.blas  # noqa: F401  # an optimized BLAS, before mlx.core is imported (blas.py)

import gguf
import mlx.core as mx
import numpy as np
from gguf import GGMLQuantizationType
from mlx.utils import tree_flatten
from mlx_lm.models.llama import Model, ModelArgs

HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 128
ROPE_THETA = 5000.0  # not llama.cpp's default, so a converter that ignores the metadata is caught
RMS_EPS = 1e-6
CONTEXT = 256


@dataclass(frozen=True)
class Dims:
    hidden: int = HIDDEN
    intermediate: int = INTERMEDIATE
    vocab: int = 0  # 0: the byte-level BPE vocabulary's size


TINY, WIDE = Dims(), Dims(hidden=256, intermediate=256)  # WIDE: every row a whole number of 256-value blocks

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BOS_ID, EOS_ID, PAD_ID = 1, 2, 2
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Byte-level BPE merges over GPT-2's byte alphabet ("Ġ" is a space): enough to make " the", " quick"... single tokens.
MERGES = [
    "Ġ t",
    "h e",
    "Ġt he",
    "Ġ q",
    "u i",
    "c k",
    "Ġq ui",
    "Ġqui ck",
    "Ġ b",
    "r o",
    "Ġb ro",
    "w n",
    "Ġbro wn",
    "Ġ f",
    "o x",
    "Ġf ox",
    "i n",
    "Ġ a",
    "n d",
    "Ġa nd",
    "e r",
    "Ġ o",
    "Ġo v",
    "Ġov er",
    "Ċ Ċ",
]

# llama.cpp's tensor names for mlx-lm's (Hugging Face) llama names.
_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
Q = GGMLQuantizationType
_FILE_TYPES = {
    Q.F32: gguf.LlamaFileType.ALL_F32,
    Q.F16: gguf.LlamaFileType.MOSTLY_F16,
    Q.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    Q.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
    Q.Q4_1: gguf.LlamaFileType.MOSTLY_Q4_1,
    Q.Q5_0: gguf.LlamaFileType.MOSTLY_Q5_0,
    Q.Q5_1: gguf.LlamaFileType.MOSTLY_Q5_1,
    Q.Q2_K: gguf.LlamaFileType.MOSTLY_Q2_K,
    Q.Q3_K: gguf.LlamaFileType.MOSTLY_Q3_K_M,
    Q.Q4_K: gguf.LlamaFileType.MOSTLY_Q4_K_M,
    Q.Q5_K: gguf.LlamaFileType.MOSTLY_Q5_K_M,
    Q.Q6_K: gguf.LlamaFileType.MOSTLY_Q6_K,
}
# k-quant block layouts (llama.cpp's ggml-common.h): where each f16 scale sits in the block, and about how
# large |w| gets per unit of those scales (the integer scales and quants at their largest).
K_QUANT_SCALES = {
    Q.Q2_K: ((80, 82), 45.0),  # scales[16] qs[64] d dmin
    Q.Q3_K: ((108,), 128.0),  # hmask[32] qs[64] scales[12] d
    Q.Q4_K: ((0, 2), 945.0),  # d dmin scales[12] qs[128]
    Q.Q5_K: ((0, 2), 1953.0),  # d dmin scales[12] qh[32] qs[128]
    Q.Q6_K: ((208,), 4096.0),  # ql[128] qh[64] scales[16] d
}


def craft_k_quant(shape: tuple[int, int], qtype: GGMLQuantizationType, rng: np.random.Generator) -> np.ndarray:
    """Valid k-quant blocks for a (rows, cols) matrix: random quants and integer scales, and f16 scales that
    make |w| about 1/sqrt(cols) at most (what a trained layer's weights look like)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    offsets, reach = K_QUANT_SCALES[qtype]
    blocks = rng.integers(0, 256, (shape[0], shape[1] // block, size), dtype=np.uint8)
    for offset in offsets:
        scale = (rng.uniform(0.5, 1.0, blocks.shape[:2]) / np.sqrt(shape[1]) / reach).astype(np.float16)
        blocks[:, :, offset : offset + 2] = scale.view(np.uint8).reshape(*blocks.shape[:2], 2)
    return blocks.reshape(shape[0], -1)


def encode(w: np.ndarray, qtype: GGMLQuantizationType, rng: np.random.Generator) -> np.ndarray:
    """The bytes (or F32/F16 values) llama.cpp would store for `w`: the gguf package's quantization, or crafted
    k-quant blocks (which then stand for `w`: the gguf package cannot make them)."""
    if qtype in K_QUANT_SCALES:
        return craft_k_quant(w.shape, qtype, rng)
    if qtype == Q.IQ4_XS:  # a type the importer refuses: random blocks, enough to write a file around
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        return rng.integers(0, 256, (w.shape[0], w.shape[1] // block * size), dtype=np.uint8)
    return gguf.quants.quantize(w, qtype)


_TOP_TENSORS = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges of a small byte-level BPE vocabulary (control tokens first)."""
    tokens = SPECIAL_TOKENS + sorted(bytes_to_unicode().values())
    tokens += [left + right for left, right in (m.split(" ") for m in MERGES)]
    types = [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    types += [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIAL_TOKENS))
    return tokens, [int(t) for t in types], list(MERGES)


VOCAB = len(tiny_vocab()[0])

# A SentencePiece-style vocabulary as llama.cpp stores one (`tokenizer.ggml.model = llama`): no merges, a score
# per token (higher merges first), byte tokens for what no piece covers, control and user-defined tokens.
SPM_SPECIALS = [
    ("<unk>", gguf.TokenType.UNKNOWN),
    ("<s>", gguf.TokenType.CONTROL),
    ("</s>", gguf.TokenType.CONTROL),
    ("<start_of_turn>", gguf.TokenType.CONTROL),
    ("<tool>", gguf.TokenType.USER_DEFINED),
    ("\n\n", gguf.TokenType.USER_DEFINED),
]  # Gemma stores its runs of newlines like this
SPM_CHARS = list("\u2581abcdefghijklmnopqrstuvwxyzTHW.,!?'0123456789")
SPM_PIECES = [
    "\u2581t",
    "he",
    "\u2581the",
    "\u2581a",
    "in",
    "er",
    "an",
    "\u2581q",
    "ui",
    "ck",
    "\u2581qui",
    "\u2581quick",
    "\u2581b",
    "ro",
    "wn",
    "\u2581bro",
    "\u2581brown",
    "\u2581f",
    "ox",
    "\u2581fox",
    "\u2581h",
    "ll",
    "\u2581he",
    "\u2581hell",
    "\u2581hello",
    "\u2581w",
    "or",
    "\u2581wor",
    "ld",
    "\u2581world",
    "\u2581\u2581",
    "\u2581\u2581\u2581",
]


def spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: specials, the 256 byte tokens, characters, then pieces best-first."""
    tokens = [t for t, _ in SPM_SPECIALS] + [f"<0x{b:02X}>" for b in range(256)]
    types = [int(k) for _, k in SPM_SPECIALS] + [int(gguf.TokenType.BYTE)] * 256
    scores = [0.0] * len(tokens)
    pieces = SPM_PIECES + SPM_CHARS  # merged pieces outrank single characters, as SentencePiece scores them
    tokens += pieces
    types += [int(gguf.TokenType.NORMAL)] * len(pieces)
    scores += [-float(i) for i in range(len(pieces))]
    return tokens, scores, types


SPM_DIMS = Dims(vocab=len(spm_vocab()[0]))


def tiny_args(tied: bool, dims: Dims = TINY) -> ModelArgs:
    return ModelArgs(
        model_type="llama",
        hidden_size=dims.hidden,
        num_hidden_layers=LAYERS,
        intermediate_size=dims.intermediate,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rms_norm_eps=RMS_EPS,
        vocab_size=dims.vocab or VOCAB,
        rope_theta=ROPE_THETA,
        max_position_embeddings=CONTEXT,
        tie_word_embeddings=tied,
    )


def random_llama_weights(seed: int, tied: bool, dims: Dims = TINY) -> dict[str, np.ndarray]:
    """Random float32 weights for the tiny llama, by mlx-lm parameter name (norm weights too, not ones)."""
    rng = np.random.default_rng(seed)
    shapes = {name: p.shape for name, p in tree_flatten(Model(tiny_args(tied, dims)).parameters())}
    weights = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            weights[name] = (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    return weights


def llama_model(weights: dict[str, np.ndarray], tied: bool, dims: Dims = TINY) -> Model:
    model = Model(tiny_args(tied, dims))
    model.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
    mx.eval(model.parameters())
    return model


def logits(model, token_ids: list[int]) -> np.ndarray:
    out = model(mx.array([token_ids]))
    return np.array(out.astype(mx.float32))[0]


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to the rows of Q (n_head) and K (n_head_kv)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_cpp_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `llama_cpp_permute`: llama.cpp's stored rows back in Hugging Face order."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(mlx_name: str) -> str:
    stem, _, kind = mlx_name.rpartition(".")
    parts = stem.split(".")
    if parts[:2] == ["model", "layers"]:
        return f"blk.{parts[2]}.{_LAYER_TENSORS['.'.join(parts[3:])]}.{kind}"
    return f"{_TOP_TENSORS[stem]}.{kind}"


def write_spm_llama_gguf(path: Path, *, add_space_prefix: bool, add_bos: bool = True) -> None:
    """A tiny llama with the SentencePiece-style vocabulary (spm_vocab), for tokenizer checks."""
    tokens, scores, types = spm_vocab()
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in (
        ("context_length", CONTEXT),
        ("embedding_length", HIDDEN),
        ("block_count", LAYERS),
        ("feed_forward_length", INTERMEDIATE),
        ("rope.dimension_count", HIDDEN // HEADS),
        ("attention.head_count", HEADS),
        ("attention.head_count_kv", KV_HEADS),
    ):
        writer.add_uint32(f"llama.{key}", value)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(add_bos)
    writer.add_add_space_prefix(add_space_prefix)
    for name, w in random_llama_weights(seed=0, tied=True, dims=SPM_DIMS).items():
        writer.add_tensor(gguf_name(name), w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_llama_gguf(
    path: Path,
    weights: dict[str, np.ndarray],
    weight_type: GGMLQuantizationType = GGMLQuantizationType.F32,
    embedding_type: GGMLQuantizationType | None = None,
    arch: str = "llama",
    add_bos: bool = False,
    dims: Dims = TINY,
    types_by_name: dict[str, GGMLQuantizationType] | None = None,
    seed: int = 0,
    pre: str = "smollm",
) -> dict[str, np.ndarray]:
    """Write `weights` as a llama.cpp-style GGUF; return the weights a reader should get back.

    Matrices are stored as `weight_type` (the embedding as `embedding_type`, default the same; a tensor
    named in `types_by_name`, by its mlx-lm name's stem such as "self_attn.o_proj", as given there), vectors
    as F32, as llama.cpp does. The returned weights are the `gguf` package's own dequantization of what was
    written, in mlx-lm names and un-permuted (Hugging Face) row order.
    """
    tokens, types, merges = tiny_vocab()
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama")
    writer.add_file_type(int(_FILE_TYPES[weight_type]))
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(dims.hidden)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(dims.intermediate)
    writer.add_rope_dimension_count(dims.hidden // HEADS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)
    expected = {}
    for name, w in weights.items():
        heads = HEADS if name.endswith("self_attn.q_proj.weight") else KV_HEADS
        permuted = name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight"))
        stored = llama_cpp_permute(w, heads) if permuted else w
        qtype = GGMLQuantizationType.F32
        if w.ndim == 2:
            qtype = (embedding_type or weight_type) if name == "model.embed_tokens.weight" else weight_type
            stem = ".".join(name.split(".")[3:-1])
            qtype = (types_by_name or {}).get(stem, qtype)
        data = encode(stored, qtype, rng)
        writer.add_tensor(gguf_name(name), data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
        if qtype == Q.IQ4_XS:
            continue  # never read back
        back = gguf.quants.dequantize(data, qtype).reshape(w.shape)
        expected[name] = llama_cpp_unpermute(back, heads) if permuted else back

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected
