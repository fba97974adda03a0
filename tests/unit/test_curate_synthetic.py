"""The synthetic curation corpus: deterministic, truthful about its plants, and scored the way dedup should be."""

import statistics

import pytest

from moatforge.curate.minhash import jaccard, shingles
from moatforge.curate.quality import QualityArgs, quality_check
from moatforge.curate.synthetic import dedup_scores, detection_probability, make_corpus


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(1200, seed=4, edit_rates=(0.01, 0.05, 0.1))


def test_same_seed_same_corpus_and_counts_match_the_fractions(corpus):
    again = make_corpus(1200, seed=4, edit_rates=(0.01, 0.05, 0.1))
    assert again.docs == corpus.docs
    assert make_corpus(1200, seed=5).docs != corpus.docs
    kinds = [corpus.kind[d["doc_id"]] for d in corpus.docs]
    assert len(kinds) == 1200 and len({d["doc_id"] for d in corpus.docs}) == 1200
    assert kinds.count("exact") == 96 and kinds.count("near") == 144 and kinds.count("junk") == 60
    for doc in corpus.docs:
        doc_id = doc["doc_id"]
        if corpus.kind[doc_id] == "exact":
            assert doc["text"] == corpus.text(corpus.cluster[doc_id])
        elif corpus.kind[doc_id] == "near":
            assert corpus.kind[corpus.cluster[doc_id]] == "source" and doc["text"] != corpus.text(
                corpus.cluster[doc_id]
            )
        else:
            assert corpus.cluster[doc_id] == doc_id


def test_near_copies_have_the_jaccard_their_edit_rate_predicts(corpus):
    by_rate: dict[float, list[float]] = {}
    for doc_id, rate in corpus.edit_rate.items():
        j = jaccard(shingles(corpus.text(doc_id)), shingles(corpus.text(corpus.cluster[doc_id])))
        by_rate.setdefault(rate, []).append(j)
    for rate, values in by_rate.items():
        survive = (1 - rate) ** 5
        assert statistics.mean(values) == pytest.approx(survive / (2 - survive), abs=0.04), rate
    sources = [d["text"] for d in corpus.docs if corpus.kind[d["doc_id"]] == "source"][:60]
    sets = [shingles(t) for t in sources]
    worst = max(jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :])
    assert worst < 0.05  # independent documents are nowhere near the LSH threshold


def test_clean_documents_pass_gopher_and_junk_fails(corpus):
    args = QualityArgs(c4=False, fineweb=False)
    verdicts = {d["doc_id"]: quality_check(d["text"], args)[0] for d in corpus.docs}
    assert all(verdicts[d] is None for d, k in corpus.kind.items() if k == "source")
    assert all(verdicts[d] is not None for d, k in corpus.kind.items() if k == "junk")


def test_dedup_scores_count_removals_per_true_cluster():
    cluster = {"a": "a", "a2": "a", "a3": "a", "b": "b", "b2": "b", "c": "c"}
    perfect = dedup_scores(["a2", "a3", "b"], cluster)
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == 1.0
    over = dedup_scores(["a", "a2", "a3", "c"], cluster)  # whole cluster a gone, and a unique doc
    assert over["correct"] == 2 and over["precision"] == 0.5 and over["recall"] == pytest.approx(2 / 3)
    assert dedup_scores([], cluster)["recall"] == 0.0
    with pytest.raises(ValueError, match="not in the corpus"):
        dedup_scores(["zz"], cluster)


def test_detection_probability_is_the_lsh_s_curve():
    assert detection_probability(1.0) == 1.0 and detection_probability(0.0) == 0.0
    assert detection_probability(0.8) == pytest.approx(1 - (1 - 0.8**7) ** 16)  # the 16 x 7 default
    assert detection_probability(0.8, bands=14, rows=8) == pytest.approx(0.924, abs=0.001)  # FineWeb's
    assert detection_probability(0.7) > 0.74 and detection_probability(0.5) < 0.13
    assert detection_probability(0.2) < 1e-3
