"""MinHash-LSH near-duplicate detection, split into pieces the pipeline can distribute.

The pipeline computes ``band_hashes(signatures(texts))`` for a whole batch of rows at once, groups rows by
bucket (one Ray Data groupby), and joins the colliding rows into clusters with ``clusters_from_buckets``.
With the default 16 bands x 7 rows (112 hash functions, FineWeb's count) a pair lands in a shared bucket with
probability ``1 - (1 - J**7) ** 16``: about 12% at Jaccard 0.5, 37% at 0.6, 75% at 0.7, 98% at 0.8 and 100% at
0.85. FineWeb's 14 x 8 (``1 - (1 - J**8) ** 14``: 5% / 21% / 56% / 92% / 99%) spends the same hashing on a
stricter curve; 16 x 7 moves the threshold from J ~0.72 to ~0.67, so near copies with ~3% of their words
edited (J ~0.75) are found 90% of the time instead of 77%, at the price of merging more pairs around J 0.5-0.6.

Hashing, all in numpy over a batch:

- words are hashed in one vectorised call per batch (pandas' 64-bit SipHash with a fixed key);
- a shingle (``k`` consecutive words) is ``mix64(sum_i word_i * C_i + k)`` with fixed odd constants ``C_i``,
  so shingle hashes are sliding-window sums over the batch's word hashes rather than one blake2b per
  n-gram string; its top 32 bits ``x`` enter the permutations;
- the ``num_perm`` hash functions are multiply-add-shift, ``h(x) = ((a*x + b) mod 2**64) >> 32`` with random
  64-bit ``a`` (odd) and ``b``: Dietzfelbinger's strongly universal family for 32-bit keys, for which
  wrapping uint64 arithmetic *is* the definition. (Wrapping ``(a*x + b) mod p`` for a prime ``p``, the
  common shortcut, breaks the pairwise independence the Jaccard estimate relies on.) The shift is monotone,
  so the minimum is taken on the 64-bit values and shifted once per signature entry.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from moatforge.curate.text_utils import words

__all__ = [
    "EMPTY_HASH",
    "UnionFind",
    "band_hashes",
    "clusters_from_buckets",
    "estimate_jaccard",
    "jaccard",
    "lsh_band_keys",
    "minhash_signature",
    "shingle_hashes",
    "shingles",
    "signatures",
]

# Signature value of a document without shingles; real values are below 2**32, so none reaches it.
EMPTY_HASH = np.uint64(np.iinfo(np.uint64).max)

_U32 = np.uint64(32)
DEFAULT_BANDS, DEFAULT_ROWS = 16, 7  # 112 hash functions
_CHUNK = 4096  # shingles per (num_perm x chunk) product: ~3.5 MB at 112 permutations, cache-friendly
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the lowercased, punctuation-free text.

    A text shorter than ``n`` words yields its whole word sequence as one shingle, so short rows still get
    a signature and only exact (normalised) copies of them collide.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    tokens = words(text)
    if not tokens:
        return set()
    if len(tokens) < n:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit (wrapping uint64 arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def _word_hashes(tokens: Sequence[str]) -> np.ndarray:
    """64-bit hashes of words, vectorised (pandas' SipHash with its fixed key, so stable across processes)."""
    if not tokens:
        return np.empty(0, dtype=np.uint64)
    return pd.util.hash_array(np.array(tokens, dtype=object))


@functools.lru_cache(maxsize=8)
def _position_constants(n: int) -> np.ndarray:
    constants = np.random.default_rng(0x5EED + n).integers(0, 2**64, size=n, dtype=np.uint64) | np.uint64(1)
    constants.flags.writeable = False
    return constants


@functools.lru_cache(maxsize=32)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def _window_hash(word_hashes: np.ndarray, k: int) -> np.ndarray:
    """Hashes of every run of ``k`` consecutive words (a sliding-window sum), reduced to 32 bits."""
    c = _position_constants(max(k, 1))
    count = len(word_hashes) - k + 1
    acc = np.full(count, np.uint64(k), dtype=np.uint64)
    for i in range(k):
        acc += word_hashes[i : i + count] * c[i]
    return _mix64(acc) >> _U32


def shingle_hashes(tokens: Sequence[str], n: int = 5) -> np.ndarray:
    """32-bit hashes (as uint64) of the word n-grams of ``tokens``; the whole sequence if shorter than ``n``."""
    if not tokens:
        return np.empty(0, dtype=np.uint64)
    return _window_hash(_word_hashes(tokens), min(n, len(tokens)))


def _signature_matrix(keys: np.ndarray, lengths: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """(documents x num_perm) minima over each document's run of ``keys``; ``EMPTY_HASH`` for empty runs."""
    n_docs = len(lengths)
    out = np.full((num_perm, n_docs), EMPTY_HASH, dtype=np.uint64)
    a, b = _permutations(num_perm, seed)
    a_col, b_col = a[:, None], b[:, None]
    nonempty = np.flatnonzero(lengths)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    for lo in range(0, len(keys), _CHUNK):
        hi = min(lo + _CHUNK, len(keys))
        # documents whose run overlaps [lo, hi): each contributes one segment within the chunk
        first = np.searchsorted(ends[nonempty], lo, side="right")
        last = np.searchsorted(starts[nonempty], hi, side="left")
        docs = nonempty[first:last]
        seg_starts = np.maximum(starts[docs], lo) - lo
        permuted = a_col * keys[None, lo:hi]
        permuted += b_col
        partial = np.minimum.reduceat(permuted, seg_starts, axis=1)
        out[:, docs] = np.minimum(out[:, docs], partial)
    sig = out.T.copy()
    sig[sig != EMPTY_HASH] >>= _U32
    return sig


def signatures(texts: Sequence[str], n: int = 5, num_perm: int = 112, seed: int = 42) -> np.ndarray:
    """MinHash signatures of a batch of texts, shape ``(len(texts), num_perm)``, uint64 values below 2**32.

    Equal to ``minhash_signature(shingles(text, n))`` row by row, computed for the whole batch at once.
    A text without words gets a row of ``EMPTY_HASH``, which ``band_hashes`` callers skip.
    """
    if num_perm < 1:
        raise ValueError("num_perm must be >= 1")
    if n < 1:
        raise ValueError("n must be >= 1")
    token_lists = [words(t) for t in texts]
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    all_hashes = _word_hashes([w for tokens in token_lists for w in tokens])
    n_shingles = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    parts = []
    if len(all_hashes):
        full = _window_hash(all_hashes, n) if len(all_hashes) >= n else np.empty(0, dtype=np.uint64)
        # a window starting at word j of a document is valid when it ends inside that document
        starts = np.cumsum(lengths) - lengths
        valid = np.zeros(len(full), dtype=bool)
        for i in np.flatnonzero(lengths >= n):  # one slice assignment per document
            valid[starts[i] : starts[i] + n_shingles[i]] = True
        short = np.flatnonzero((lengths > 0) & (lengths < n))
        if short.size == 0:
            parts.append(full[valid])
        else:  # rare: documents shorter than n words hash their whole word sequence, in document order
            pieces, cursor = [], 0
            for i in short:
                pieces.append(full[cursor : starts[i]][valid[cursor : starts[i]]])
                pieces.append(_window_hash(all_hashes[starts[i] : starts[i] + lengths[i]], int(lengths[i])))
                cursor = starts[i] + lengths[i]
            pieces.append(full[cursor:][valid[cursor:]])
            parts.append(np.concatenate(pieces))
    keys = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    return _signature_matrix(keys, n_shingles, num_perm, seed)


def minhash_signature(shingles: Iterable[str], num_perm: int = 112, seed: int = 42) -> np.ndarray:
    """MinHash signature (uint64, length ``num_perm``) of a set of shingle strings (space-joined words).

    Identical for identical sets, seeds and ``num_perm``, and equal to the row ``signatures`` computes for a
    text with these shingles. An empty set gives all ``EMPTY_HASH``, which ``lsh_band_keys`` maps to no buckets.
    """
    if num_perm < 1:
        raise ValueError("num_perm must be >= 1")
    keys = [shingle_hashes(s.split(" "), n=s.count(" ") + 1) for s in set(shingles)]
    if not keys:
        return np.full(num_perm, EMPTY_HASH, dtype=np.uint64)
    flat = np.concatenate(keys)
    return _signature_matrix(flat, np.array([len(flat)]), num_perm, seed)[0]


@functools.lru_cache(maxsize=32)
def _band_constants(bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0xBA4D)
    mult = rng.integers(0, 2**64, size=(bands, rows), dtype=np.uint64) | np.uint64(1)
    salt = rng.integers(0, 2**64, size=bands, dtype=np.uint64)
    return mult, salt


def band_hashes(sigs: np.ndarray, bands: int = DEFAULT_BANDS, rows: int = DEFAULT_ROWS) -> np.ndarray:
    """One 64-bit bucket id per band and document, shape ``(documents, bands)``, as int64.

    Each band's salt is part of its hash, so equal values in different bands never meet in one bucket.
    Rows of empty documents (all ``EMPTY_HASH``) get ids too; callers drop them (see ``lsh_band_keys``).
    """
    sigs = np.atleast_2d(np.asarray(sigs, dtype=np.uint64))
    if sigs.shape[1] < bands * rows:
        raise ValueError(f"signature has {sigs.shape[1]} values, bands*rows needs {bands * rows}")
    mult, salt = _band_constants(bands, rows)
    grouped = sigs[:, : bands * rows].reshape(len(sigs), bands, rows)
    acc = (grouped * mult[None]).sum(axis=2, dtype=np.uint64) + salt[None]
    return _mix64(acc).view(np.int64)


def lsh_band_keys(signature: np.ndarray, bands: int = DEFAULT_BANDS, rows: int = DEFAULT_ROWS) -> list[str]:
    """One bucket key per band, ``"<band>:<bucket id>"``; rows sharing any key are near-duplicate candidates.

    Signatures of empty documents return no keys, so empty rows are never clustered together.
    """
    sig = np.asarray(signature, dtype=np.uint64)
    if sig.size < bands * rows:
        raise ValueError(f"signature has {sig.size} values, bands*rows needs {bands * rows}")
    if np.all(sig == EMPTY_HASH):
        return []
    return [f"{band}:{int(h) & (2**64 - 1):016x}" for band, h in enumerate(band_hashes(sig[None], bands, rows)[0])]


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity; 0.0 for two empty sets, so that empty documents never count as duplicates."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Jaccard estimate from two signatures, for verifying LSH candidates without the original shingles."""
    sig_a, sig_b = np.asarray(sig_a), np.asarray(sig_b)
    if sig_a.shape != sig_b.shape:
        raise ValueError("signatures differ in length")
    if np.all(sig_a == EMPTY_HASH) or np.all(sig_b == EMPTY_HASH):
        return 0.0
    return float(np.mean(sig_a == sig_b))


class UnionFind:
    """Disjoint sets whose root is always the smallest member, so the root is the cluster's representative."""

    def __init__(self, items: Iterable[str] = ()):
        self._parent: dict[str, str] = {}
        for item in items:
            self.add(item)

    def add(self, item: str) -> None:
        self._parent.setdefault(item, item)

    def find(self, item: str) -> str:
        parent = self._parent
        if item not in parent:
            parent[item] = item
            return item
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:  # path compression keeps later finds near O(1)
            parent[item], item = root, parent[item]
        return root

    def union(self, a: str, b: str) -> str:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return root_a
        if root_b < root_a:
            root_a, root_b = root_b, root_a
        self._parent[root_b] = root_a
        return root_a

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in self._parent:
            out.setdefault(self.find(item), []).append(item)
        return out

    def __contains__(self, item: object) -> bool:
        return item in self._parent

    def __iter__(self):
        return iter(list(self._parent))

    def __len__(self) -> int:
        return len(self._parent)


def clusters_from_buckets(bucket_to_ids: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Map every id seen in any bucket to its cluster's representative (the smallest id of the cluster).

    Clusters are the connected components of "shares a bucket", so A~B and B~C put A and C together even
    if they never share a bucket; that transitivity is what removes chains of near-copies.
    """
    uf = UnionFind()
    for ids in bucket_to_ids.values():
        ids = list(ids)
        if not ids:
            continue
        first = ids[0]
        uf.add(first)
        for other in ids[1:]:
            uf.union(first, other)
    return {item: uf.find(item) for item in uf}
