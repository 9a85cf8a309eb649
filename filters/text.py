"""Vectorised text normalisation and hashing, shared by the dedup and decontamination filters.

A batch of documents becomes a flat array of word hashes plus per-document offsets: words are
cut and hashed straight from the Arrow string buffer by a compiled (numba) pass that releases the
GIL (no Python call per token), and word n-grams are hashed from the word hashes. `words` +
`word_hashes` is the reference path (Arrow split, numpy hashing), kept to check the fast one.
Normalisation: Unicode NFKC, lowercase, every run of characters that are not letters or digits
becomes one space.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

_U64 = np.uint64
# Fixed odd multipliers: the hash of an n-gram is sum(word_hash[k] * _MULT[k]), then mixed.
_MULT = np.random.default_rng(0x1F5E).integers(0, 1 << 63, 64, dtype=np.uint64) * _U64(2) + _U64(1)
_LEN_MULT, _CHUNK_MULT = _U64(0x9E3779B97F4A7C15), _U64(0x100000001B3)  # odd: golden ratio, FNV prime
_C1, _C2, _S33 = _U64(0xFF51AFD7ED558CCD), _U64(0xC4CEB9FE1A85EC53), _U64(33)  # MurmurHash3 fmix64
_BYTE_MASK = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=_U64)  # the low k bytes of a word
_NOT_WORD = r"[^\p{L}\p{N}]+"
_WORD_BYTE = np.zeros(256, dtype=bool)  # ASCII letters and digits; bytes >= 0x80 belong to letters
_WORD_BYTE[[*range(48, 58), *range(97, 123), *range(65, 91), *range(128, 256)]] = True


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: a bijection that spreads every input bit over the output."""
    x = x ^ (x >> _S33)
    x = x * _C1
    x = x ^ (x >> _S33)
    x = x * _C2
    return x ^ (x >> _S33)


def normalize(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """NFKC, lowercase, punctuation and whitespace runs -> one space, trimmed; null -> ""."""
    texts = pc.fill_null(texts, "")
    texts = pc.utf8_lower(pc.utf8_normalize(texts, "NFKC"))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, _NOT_WORD, " "))


def join_fields(batch: pa.RecordBatch | pa.Table, fields: list[str]) -> pa.Array:
    """The given string columns of each row joined by a newline (nulls as empty)."""
    cols = [pc.fill_null(batch.column(f), "") for f in fields]
    if len(cols) == 1:
        return cols[0]
    return pc.binary_join_element_wise(*cols, "\n")


def words(texts: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Normalised words of each text, as an Arrow list array (one list per text)."""
    norm = normalize(texts)
    if isinstance(norm, pa.ChunkedArray):
        norm = norm.combine_chunks()
    # splitting "" gives [""]; an empty text has no words
    empty = pa.scalar([], pa.list_(pa.string()))
    return pc.if_else(pc.equal(norm, ""), empty, pc.utf8_split_whitespace(norm))


def word_hashes(word_lists: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every word, flat; offsets: document i owns hashes[offsets[i]:offsets[i+1]])."""
    offsets = np.asarray(word_lists.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    flat = word_lists.flatten()
    data, char_off = _string_buffer(flat)
    return _hash_spans(data, char_off[:-1], char_off[1:]), offsets


def tokenize(texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes of each normalised text, with offsets; the same words and hashes as
    `word_hashes(words(texts))`, cut and hashed from the string buffer by one compiled pass."""
    data, doc_off = _string_buffer(prepared(texts))
    counts = np.zeros(len(doc_off) - 1, np.int64)
    _count_words(data, doc_off, _WORD_BYTE, counts)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    hashes = np.empty(int(offsets[-1]), _U64)
    _hash_words(data, doc_off, _WORD_BYTE, hashes)
    return hashes, offsets


def prepared(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The texts with normalisation applied as far as the byte-level word cutter needs: lowercase,
    and for texts that are not pure ASCII also NFKC and Unicode punctuation turned into spaces.
    In the result a word is a maximal run of ASCII letters/digits and non-ASCII bytes (`_WORD_BYTE`).
    """
    texts = pc.fill_null(texts, "")
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if pc.all(pc.string_is_ascii(texts)).as_py():  # NFKC leaves ASCII as it is
        return pc.ascii_lower(texts)
    texts = pc.utf8_lower(pc.utf8_normalize(texts, "NFKC"))
    unicode = pc.invert(pc.string_is_ascii(texts))
    fixed = pc.replace_substring_regex(pc.filter(texts, unicode), _NOT_WORD, " ")
    return pc.replace_with_mask(texts, unicode, fixed)


# Compiled kernels (numba, no GIL: batches run on threads). `span_hash` is `_hash_spans` for one span.


@njit(nogil=True, cache=True)
def fmix64_one(x):
    x ^= x >> _S33
    x *= _C1
    x ^= x >> _S33
    x *= _C2
    return x ^ (x >> _S33)


@njit(nogil=True, cache=True)
def span_hash(data, start, end):
    n = end - start
    h = _U64(n) * _LEN_MULT
    off = 0
    while off < n:
        chunk = _U64(0)
        for i in range(min(8, n - off)):
            chunk |= _U64(data[start + off + i]) << _U64(8 * i)
        h = fmix64_one(h + chunk * _CHUNK_MULT)
        off += 8
    return h


@njit(nogil=True, cache=True)
def gram_hash(word_hashes, start, width, mult):
    """`ngram_hashes`'s hash of the `width` words from `start` (mult is `_MULT`)."""
    acc = _U64(width) * mult[-1]
    for k in range(width):
        acc += word_hashes[start + k] * mult[k]
    return fmix64_one(acc)


@njit(nogil=True, cache=True)
def _count_words(data, doc_off, is_word, counts):
    for d in range(len(doc_off) - 1):
        inside = False
        c = 0
        for i in range(doc_off[d], doc_off[d + 1]):
            w = is_word[data[i]]
            if w and not inside:
                c += 1
            inside = w
        counts[d] = c


@njit(nogil=True, cache=True)
def hash_doc_words(data, start, end, is_word, out, k):
    """Hash each word of data[start:end] (a run of word bytes) into out[k:]; returns the next k."""
    i = start
    while i < end:
        if is_word[data[i]]:
            s = i
            while i < end and is_word[data[i]]:
                i += 1
            out[k] = span_hash(data, s, i)
            k += 1
        else:
            i += 1
    return k


@njit(nogil=True, cache=True)
def _hash_words(data, doc_off, is_word, out):
    k = 0
    for d in range(len(doc_off) - 1):
        k = hash_doc_words(data, doc_off[d], doc_off[d + 1], is_word, out, k)


def _string_buffer(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string array and each string's byte offsets into them."""
    n = len(strings)
    large = pa.types.is_large_string(strings.type)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64 if large else np.int32,
                            count=strings.offset + n + 1)[strings.offset:].astype(np.int64)
    buf = strings.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8)[offsets[0]:offsets[-1]] if buf is not None else np.zeros(0, np.uint8)
    return data, offsets - offsets[0]


def _hash_spans(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash of the bytes data[start:end] of each span, whatever its position, mixed to 64 bits.

    A span is read 8 bytes at a time as little-endian integers straight from the buffer (a uint64
    view with a 1-byte stride, so any start is readable), masked to the span's length and mixed into
    the hash: a word of up to 8 bytes costs one gather and one mix, a longer one a round per 8 bytes.
    """
    padded = np.zeros(len(data) + 8, np.uint8)
    padded[:len(data)] = data
    eight = np.ndarray((len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))
    lengths = ends - starts
    hashes = lengths.astype(_U64) * _LEN_MULT
    live = np.arange(len(starts))
    offset = 0
    while len(live):
        rest = np.minimum(lengths[live] - offset, 8)
        chunk = eight[starts[live] + offset] & _BYTE_MASK[rest]
        hashes[live] = fmix64(hashes[live] + chunk * _CHUNK_MULT)
        offset += 8
        live = live[lengths[live] > offset]
    return hashes


def ngram_hashes(hashes: np.ndarray, offsets: np.ndarray, n: int, *,
                 short: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every window of `n` consecutive words inside each document, with offsets.

    A non-empty document shorter than `n` words gives one hash of all its words when `short`
    (its whole text is its only shingle), none otherwise. The hash of a window of k words is the
    same whichever `n` produced it, so a short text can be looked up among k-word windows.
    """
    if n > len(_MULT):
        raise ValueError(f"n-grams longer than {len(_MULT)} words are not supported")
    lengths = np.diff(offsets)
    counts = np.where(lengths >= n, lengths - n + 1, (lengths > 0) & short).astype(np.int64)
    total = int(counts.sum())
    out_offsets = np.concatenate([[0], np.cumsum(counts)])
    if total == 0:
        return np.zeros(0, _U64), out_offsets
    first = np.repeat(offsets[:-1] - out_offsets[:-1], counts) + np.arange(total)
    width = np.repeat(np.minimum(lengths, n), counts)
    acc = width.astype(_U64) * _MULT[-1]
    last = len(hashes) - 1
    for k in range(n):
        term = hashes[np.minimum(first + k, last)] * _MULT[k]
        acc += np.where(k < width, term, _U64(0))
    return fmix64(acc), out_offsets
