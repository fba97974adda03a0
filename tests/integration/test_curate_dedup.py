"""Dedup recall and precision of the real pipeline (exact_dedup + near_dedup on Ray) on a planted corpus.

The thresholds follow from MinHash-LSH maths for the defaults (word 5-grams, 16 bands x 7 rows): a pair of
Jaccard similarity J shares a bucket with probability p(J) = 1 - (1 - J**7)**16. Each near copy's exact
Jaccard to its source is computed here, so per edit rate the expected number found is sum(p(J)) and the
observed number must lie within 3 standard deviations of it (found via the source pair, or more rarely via
another copy of the same source, which can only add). Independent documents have J < 0.05, where
p < 1e-9, so any merge of unrelated documents is a bug: precision must be exactly 1.
"""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from moatforge.config import load_config
from moatforge.curate.minhash import jaccard, shingles
from moatforge.curate.pipeline import run_curate
from moatforge.curate.synthetic import dedup_scores, detection_probability, make_corpus
from moatforge.curate.text_utils import content_hash

RATES = (0.01, 0.02, 0.03, 0.05, 0.1)


@pytest.fixture(scope="module")
def planted():
    # 1500 docs: ~990 sources, 105 exact copies, 405 near copies (81 per edit rate), no junk.
    return make_corpus(1500, seed=11, exact_frac=0.07, near_frac=0.27, junk_frac=0.0, edit_rates=RATES,
                       min_words=60, max_words=220)  # fmt: skip


def _representatives(out) -> dict[str, str]:
    """doc_id -> doc_id of the row its cluster kept, following dup_of through exact then near dedup."""
    kept = pq.read_table(out / "data", columns=["id", "meta"]).to_pylist()
    rejects = pq.read_table(out / "rejects", columns=["id", "meta", "step", "dup_of"]).to_pylist()
    doc_of = {r["id"]: json.loads(r["meta"])["doc_id"] for r in kept + rejects}
    parent = {r["id"]: r["dup_of"] for r in rejects}
    assert {r["step"] for r in rejects} <= {"exact_dedup", "near_dedup"}

    def root(row_id: str) -> str:
        while row_id in parent:
            row_id = parent[row_id]
        return row_id

    return {doc_of[row_id]: doc_of[root(row_id)] for row_id in doc_of}


def test_dedup_recall_and_precision_follow_minhash_lsh_maths(ray_cluster, planted, tmp_path):
    planted.write_jsonl(tmp_path / "raw", shards=3)
    out = tmp_path / "clean"
    steps = "curate.steps=[{name: normalize}, {name: exact_dedup}, {name: near_dedup}]"
    cfg = load_config(None, [f"curate.input={tmp_path / 'raw'}", f"curate.output={out}", steps])
    manifest = run_curate(cfg)
    assert manifest["rows_read"] == 1500 == manifest["rows_kept"] + manifest["rows_rejected"]

    rep = _representatives(out)
    removed = [d for d, r in rep.items() if r != d]
    scores = dedup_scores(removed, planted.cluster)
    assert scores["precision"] == 1.0, scores

    # exact: every copy whose normalised text was seen before, and nothing else
    distinct = len({content_hash(d["text"]) for d in planted.docs})
    assert manifest["rejected"]["exact_dedup"] == {"exact_duplicate": 1500 - distinct}
    assert all(rep[d] == rep[planted.cluster[d]] for d, k in planted.kind.items() if k == "exact")

    for rate in RATES:
        copies = [d for d, r in planted.edit_rate.items() if r == rate]
        probs = []
        for d in copies:
            j = jaccard(shingles(planted.text(d)), shingles(planted.text(planted.cluster[d])))
            probs.append(detection_probability(j))
        found = sum(rep[d] == rep[planted.cluster[d]] for d in copies)
        expected, sd = sum(probs), math.sqrt(sum(p * (1 - p) for p in probs))
        assert found >= expected - 3 * sd - 1, (rate, found, expected)
        assert found <= expected + 3 * sd + 2, (rate, found, expected)  # the LSH threshold is really applied
        if rate <= 0.02:  # light edits (J >= ~0.8): practically all found
            assert found >= 0.95 * len(copies), (rate, found, len(copies))
        if rate >= 0.1:  # heavy edits (J ~0.4) are by design below the S-curve's knee
            assert found <= 0.1 * len(copies), (rate, found, len(copies))
