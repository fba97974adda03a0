import random

import numpy as np
import pytest

from moatforge.curate.minhash import (
    DEFAULT_BANDS,
    EMPTY_HASH,
    UnionFind,
    _permutations,
    band_hashes,
    clusters_from_buckets,
    estimate_jaccard,
    jaccard,
    lsh_band_keys,
    minhash_signature,
    shingle_hashes,
    shingles,
    signatures,
)
from moatforge.curate.text_utils import content_hash, pick_representative

VOCAB = [f"w{i}" for i in range(2000)]


def _doc(seed: int, n_words: int = 200) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(n_words)]


def test_shingles_are_lowercase_punctuation_free_word_ngrams():
    assert shingles("The cat, the HAT!", n=2) == {"the cat", "cat the", "the hat"}
    assert shingles("Too short.", n=5) == {"too short"}
    assert shingles("  ...  ", n=5) == set()


def test_signature_is_the_multiply_shift_minimum_in_exact_integer_arithmetic():
    words = _doc(3, n_words=30)
    keys = [int(x) for x in shingle_hashes(words, n=5)]
    assert len(keys) == 26 and all(0 <= x < 2**32 for x in keys)
    a, b = _permutations(16, 5)
    expected = [min(((int(ai) * x + int(bi)) % 2**64) >> 32 for x in keys) for ai, bi in zip(a, b, strict=True)]
    assert minhash_signature(shingles(" ".join(words)), num_perm=16, seed=5).tolist() == expected


def test_batch_signatures_equal_per_document_signatures():
    texts = [" ".join(_doc(i, n_words=20 + 37 * i)) for i in range(6)]
    texts += ["", "Too short.", "ÉTÉ à Paris, déjà vu", "one two three four five"]
    batch = signatures(texts, n=5, num_perm=112, seed=9)
    assert batch.shape == (len(texts), 112)
    for text, row in zip(texts, batch, strict=True):
        assert np.array_equal(row, minhash_signature(shingles(text, 5), num_perm=112, seed=9))
    assert np.all(batch[0] == EMPTY_HASH) is np.False_ and np.all(batch[6] == EMPTY_HASH)
    buckets = [int(h) for h in band_hashes(batch[:1])[0].view(np.uint64)]
    assert buckets == [int(k.split(":")[1], 16) for k in lsh_band_keys(batch[0])]


def test_signature_is_deterministic_and_seeded():
    s = shingles(" ".join(_doc(0)))
    sig = minhash_signature(s, num_perm=112, seed=7)
    assert sig.dtype == np.uint64 and sig.shape == (112,)
    assert np.array_equal(sig, minhash_signature(set(s), num_perm=112, seed=7))
    assert not np.array_equal(sig, minhash_signature(s, num_perm=112, seed=8))
    assert np.all(sig < 2**32)


@pytest.mark.parametrize("overlap", [0.2, 0.5, 0.8])
def test_signature_estimates_jaccard(overlap):
    universe = [f"s{i}" for i in range(600)]
    shared = int(300 * overlap)
    a = set(universe[:300])
    b = set(universe[300 - shared : 600 - shared])
    true = jaccard(a, b)
    est = estimate_jaccard(minhash_signature(a, num_perm=256), minhash_signature(b, num_perm=256))
    assert abs(est - true) <= 0.1


def test_near_duplicates_share_a_band_and_unrelated_docs_do_not():
    base = _doc(1)
    near = list(base)
    for i in (40, 100, 160):  # three edits in a 200-word document
        near[i] = "changed"
    other = _doc(2)
    docs = {"base": base, "near": near, "other": other}
    keys = {name: set(lsh_band_keys(minhash_signature(shingles(" ".join(w))))) for name, w in docs.items()}
    assert all(len(k) == DEFAULT_BANDS for k in keys.values())
    assert keys["base"] & keys["near"]
    assert not keys["base"] & keys["other"]
    assert not keys["near"] & keys["other"]


def test_band_keys_carry_the_band_index_and_empty_docs_get_none():
    sig = np.zeros(112, dtype=np.uint64)
    keys = lsh_band_keys(sig)
    assert len(set(keys)) == DEFAULT_BANDS  # identical bands still land in different buckets
    assert [k.split(":")[0] for k in keys] == [str(b) for b in range(DEFAULT_BANDS)]
    assert lsh_band_keys(minhash_signature(set())) == []
    assert np.all(minhash_signature(set(), num_perm=4) == EMPTY_HASH)
    with pytest.raises(ValueError):
        lsh_band_keys(np.zeros(10, dtype=np.uint64))


def test_union_find_roots_are_smallest_ids():
    uf = UnionFind(["d", "a", "c", "b", "e"])
    uf.union("d", "c")
    uf.union("c", "b")
    assert uf.find("d") == "b"
    uf.union("e", "a")
    assert uf.groups() == {"a": ["a", "e"], "b": ["d", "c", "b"]}
    assert uf.union("a", "d") == "a"
    assert {uf.find(x) for x in "abcde"} == {"a"}
    assert "z" not in uf and len(uf) == 5


def test_clusters_from_buckets_are_transitive_and_cover_every_id():
    buckets = {"0:x": ["r9", "r3"], "1:y": ["r3", "r7"], "2:z": ["r5"], "3:w": ["r8", "r6"], "4:v": []}
    assert clusters_from_buckets(buckets) == {
        "r9": "r3",
        "r3": "r3",
        "r7": "r3",
        "r5": "r5",
        "r8": "r6",
        "r6": "r6",
    }


def test_jaccard():
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 0.0


def test_content_hash_ignores_case_and_whitespace_but_not_words():
    h = content_hash("Hello   World\n")
    assert h == content_hash("hello world") == content_hash("\ufeffHELLO\tworld")
    assert h != content_hash("hello there world")
    assert len(h) == 32


def test_pick_representative_is_smallest_id():
    assert pick_representative(["b2", "a9", "c1"]) == "a9"
