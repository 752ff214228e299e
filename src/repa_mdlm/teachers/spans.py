"""The span map between two tokenizations of one text: token-wise REPA across tokenizers.

The student's packed sequence becomes text, and each student position gets the characters it
stands for (exactly, from the bytes of its byte-level BPE token). The teacher tokenizes the same
text with offsets. A span is a smallest run of characters whose ends are token boundaries on both
sides: the connected groups of overlapping token intervals. Often it is one token on each side.
A position is left out when it has no character (eos, special tokens), when no teacher token covers
its characters (whitespace a WordPiece drops, text cut off by the teacher's max_length), and the
same on the teacher's side (its special tokens, a text prefix such as "passage: ").

All offsets are in characters of the text the teacher reads. A byte-level token can hold part of a
UTF-8 character (an emoji's first bytes): it stands for that whole character, so the tokens that
share a character fall in one span.

The text is built here from the tokens' bytes, so it can differ from the pooled mode's text
(data.dataset.sequence_texts, the tokenizer's decode) where a document holds a special token (it has
no characters here) or invalid UTF-8 (one U+FFFD per byte here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPAN_MAP_VERSION = 1
"""How spans are cut (this module's rules): a span cache records it, and one of another version is refused."""
DOCUMENT_SEPARATOR = "\n\n"
"""Between the documents of a packed sequence, as data.dataset.sequence_texts joins them."""


def byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's, Qwen's, and the workflow's own tokenizer's): the printable
    character that stands for each byte -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def student_token_bytes(tokenizer) -> list[bytes]:
    """Each student id's bytes; b"" for special and added tokens (they stand for no character).
    Raises ValueError for a tokenizer that is not byte-level BPE (its tokens' bytes are not exact)."""
    alphabet = byte_level_alphabet()
    special = set(tokenizer.all_special_ids) | {i for i in getattr(tokenizer, "added_tokens_decoder", {})}
    table = [b""] * len(tokenizer)
    for token, index in tokenizer.get_vocab().items():
        if index in special or index >= len(table):
            continue
        try:
            table[index] = bytes(alphabet[ch] for ch in token)
        except KeyError:
            raise ValueError(f"student token {token!r} (id {index}) is not byte-level BPE: token-wise REPA maps "
                             "student tokens to characters through their bytes; use a byte-level BPE student "
                             "tokenizer (tokenizer.name_or_path: null trains one; Qwen's is one)") from None
    return table


@dataclass
class StudentText:
    """A packed sequence as the teacher reads it, and each student position's characters in it."""
    text: str
    starts: np.ndarray
    """[seq_len] first character of each position ([start, end) is empty where it has none)."""
    ends: np.ndarray


def _decoded(raw: bytes) -> tuple[str, np.ndarray]:
    """raw decoded as UTF-8, each invalid byte one U+FFFD (a character cut at the sequence's edge), and
    the character each byte belongs to."""
    chars = raw.decode("utf-8", errors="surrogateescape")
    widths = [1 if "\udc80" <= ch <= "\udcff" else len(ch.encode("utf-8")) for ch in chars]
    text = "".join("\ufffd" if "\udc80" <= ch <= "\udcff" else ch for ch in chars)
    return text, np.repeat(np.arange(len(chars)), widths)


def student_text(row: np.ndarray, token_bytes: list[bytes], eos_id: int, prefix: str = "") -> StudentText:
    """The text of one packed sequence (prefix, then its documents joined by DOCUMENT_SEPARATOR) and
    the character range of each of its positions."""
    row = np.asarray(row)
    starts, ends = np.zeros(len(row), dtype=np.int64), np.zeros(len(row), dtype=np.int64)
    pieces, length = [prefix], len(prefix)
    boundaries = np.flatnonzero(row == eos_id)
    for lo, hi in zip(np.r_[0, boundaries + 1], np.r_[boundaries, len(row)]):
        if hi <= lo:
            continue
        token_bytes_of_doc = [token_bytes[i] for i in row[lo:hi]]
        text, char_of_byte = _decoded(b"".join(token_bytes_of_doc))
        if not text:
            continue
        if length > len(prefix):
            pieces.append(DOCUMENT_SEPARATOR)
            length += len(DOCUMENT_SEPARATOR)
        byte_ends = np.cumsum([len(b) for b in token_bytes_of_doc])
        byte_starts = byte_ends - [len(b) for b in token_bytes_of_doc]
        for k, (b0, b1) in enumerate(zip(byte_starts, byte_ends)):
            if b1 > b0:  # the characters its first and last byte belong to
                starts[lo + k] = length + char_of_byte[b0]
                ends[lo + k] = length + char_of_byte[b1 - 1] + 1
        pieces.append(text)
        length += len(text)
    return StudentText("".join(pieces), starts, ends)


@dataclass
class SpanMap:
    """The spans of one sequence: each student position's and each teacher token's span (-1: none)."""
    student: np.ndarray
    teacher: np.ndarray
    spans: int
    left_out: dict[str, int] = field(default_factory=dict)
    """Student positions left out: no_character, truncated (beyond the teacher's max_length), unmatched."""


def span_map(student_starts, student_ends, teacher_offsets, truncated: bool = False) -> SpanMap:
    """The smallest spans whose boundaries are token boundaries on both sides: tokens are grouped while
    their character intervals overlap; a group with tokens on both sides is a span, numbered in text
    order. teacher_offsets: [(start, end)] per teacher token, (0, 0) for a special token. truncated: the
    teacher's input was cut at max_length (student positions past its last character count as truncated)."""
    student_starts, student_ends = np.asarray(student_starts), np.asarray(student_ends)
    teacher_offsets = np.asarray(teacher_offsets, dtype=np.int64).reshape(-1, 2)
    intervals = [(s, e, 0, i) for i, (s, e) in enumerate(zip(student_starts, student_ends)) if e > s]
    intervals += [(s, e, 1, j) for j, (s, e) in enumerate(teacher_offsets) if e > s]
    intervals.sort()
    student, teacher = np.full(len(student_starts), -1, np.int64), np.full(len(teacher_offsets), -1, np.int64)
    spans, end, group = 0, -1, []

    def close():
        nonlocal spans
        if {side for _, _, side, _ in group} == {0, 1}:
            for _, _, side, index in group:
                (student if side == 0 else teacher)[index] = spans
            spans += 1

    for interval in intervals:
        if interval[0] >= end and group:
            close()
            group = []
        group.append(interval)
        end = max(end, interval[1])
    if group:
        close()
    has_chars = student_ends > student_starts
    covered_to = int(teacher_offsets[:, 1].max()) if len(teacher_offsets) else 0
    past = has_chars & (student_starts >= covered_to) if truncated else np.zeros_like(has_chars)
    left = student < 0
    return SpanMap(student, teacher, spans, {"no_character": int((~has_chars).sum()),
                                             "truncated": int((left & past).sum()),
                                             "unmatched": int((left & has_chars & ~past).sum())})


def identity_span_map(row: np.ndarray, token_bytes: list[bytes]) -> SpanMap:
    """A teacher that reads the student's own ids: each position with a character is its own span."""
    has_chars = np.array([len(token_bytes[i]) > 0 for i in np.asarray(row)])
    ids = np.where(has_chars, np.cumsum(has_chars) - 1, -1)
    return SpanMap(ids, ids.copy(), int(has_chars.sum()),
                   {"no_character": int((~has_chars).sum()), "truncated": 0, "unmatched": 0})
