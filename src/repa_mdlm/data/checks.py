"""What the student tokenizer and the packed token arrays must satisfy before any training, checked by
the jobs that make them (data.dataset.prepare_tokenizer, data.dataset.tokenize_and_pack), since the config alone cannot
show it: the mask token is a new special token that no text is made of, and each split holds what its
budget asks (corpus.*_tokens) and at least the 2 test sequences a standard error needs."""

from __future__ import annotations

import math

from ..config import ConfigError, CorpusConfig


def mask_token_problem(tokenizer, mask: str) -> str | None:
    """Why `mask` cannot be the diffusion's mask token in this tokenizer (None if it can): it is one of
    the tokenizer's other special tokens (eos, pad, unk...), or an ordinary token that text tokenizes
    into. An added special token of that name (a tokenizer this workflow made) is the mask itself."""
    others = {name: value for name, value in tokenizer.special_tokens_map.items()
              if name not in ("mask_token", "additional_special_tokens") and isinstance(value, str)}
    for name, value in others.items():
        if value == mask:
            return f"it is the tokenizer's {name.removesuffix('_token')} token"
    token_id = tokenizer.get_vocab().get(mask)
    added = tokenizer.added_tokens_decoder.get(token_id) if token_id is not None else None
    if token_id is not None and not (added is not None and added.special):
        return f"it is an ordinary token of the tokenizer (id {token_id}) that text is tokenized into"
    return None


class MaskFreeDocuments:
    """The BPE's training documents, noting the first that holds the mask token's text: every
    occurrence would become a mask (a special token is matched in raw text)."""

    def __init__(self, docs, mask: str):
        self.docs, self.mask, self.holding = docs, mask, None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        text = next(self.docs)
        if self.holding is None and self.mask in text:
            self.holding = text
        return text

    def check(self) -> None:
        if self.holding is not None:
            raise ConfigError(mask_in_text(self.mask, self.holding, "the corpus's train split"))


def mask_in_text(mask: str, text: str, where: str) -> str:
    at = text.index(mask) if mask in text else 0
    return (f"tokenizer.mask_token = {mask!r} occurs in the text of {where} (…{text[max(0, at - 30):at + 30]!r}…): "
            "each occurrence would be read as a mask (training then fails with an infinite N-ELBO); choose a mask "
            "token that no document contains (e.g. '<|mask|>') and rebuild the tokenizer and the token arrays "
            "(snakemake --forcerun tokenizer)")


MIN_FILL = 0.99
"""The share of a split's budget (corpus.*_tokens) the corpus must fill, else tokenize refuses: a budget
taken from a count of the corpus (the study's "every sequence") may move by a few sequences when a
tokenizers release trains a slightly different BPE; a shortfall beyond that is a config error, not a
smaller experiment to run in silence."""


def shortfall_error(corpus: CorpusConfig, got: dict[str, int], target: dict[str, int], seq_len: int,
                    test_only: bool) -> str | None:
    """Why the packed splits cannot be used (None if they can): a sweep's split filled to under MIN_FILL
    of its budget; for a zero-shot set (test_only), whose budget is a ceiling, fewer than the 2
    sequences that a standard error needs. got, target: sequences per split."""
    for split, n in got.items():
        if test_only:
            if n < 2:
                return (f"the zero-shot set's corpus gave {n} test sequence(s) of {seq_len} tokens; its test PPL's "
                        "standard error needs at least 2: use a larger corpus for it")
            continue
        if n >= max(1, math.ceil(MIN_FILL * target[split])):
            continue
        key = f"corpus.{split}_tokens"
        lower = f"lower {key} to at most {n * seq_len:,}, or use " if n >= (2 if split == "test" else 1) else "use "
        more = "a larger corpus" + ("" if split == "train" else f" or a larger corpus.{split}_permille")
        return (f"{key} = {getattr(corpus, split + '_tokens'):,} asks for {target[split]:,} sequences of {seq_len} "
                f"tokens, but the corpus's {split} split holds {n:,} ({100 * n / target[split]:.1f} % of the "
                f"budget): {lower}{more}")
    return None
