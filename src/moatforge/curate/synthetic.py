"""A seeded corpus of prose-like documents with planted duplicates and junk, and the truth to score dedup against.

Used by the dedup recall/precision test and by ``benchmarks/curate_bench.py``. Documents are paragraphs of
business prose built from sentence templates over a few thousand word choices, so two independent documents
share almost no word 5-grams (Jaccard ~0) while every document passes the Gopher quality and repetition
rules. On top of the unique ("source") documents the generator plants:

- exact copies: verbatim repeats of a source;
- near copies: a source with ``round(rate * words)`` word edits at distinct random positions (substitute,
  delete or insert a word), ``rate`` drawn from ``edit_rates``;
- junk: low-quality documents of several kinds (too short, keyword soup without stop words, symbol noise,
  repeated lines, bullet lists), each unique so that none of them is a duplicate of another.

Expected MinHash-LSH detection follows from the edit rate: ``k`` random word edits destroy up to ``n`` shingles
each, so about ``s = (1 - rate) ** n`` of the n-grams survive, the Jaccard similarity is ``s / (2 - s)`` and a
pair shares one of ``b`` bands of ``r`` rows with probability ``1 - (1 - J ** r) ** b``. For 5-grams that is
J ~0.91 / 0.83 / 0.75 / 0.63 / 0.42 at 1 / 2 / 3 / 5 / 10 % edits, and detection ~1.00 / 0.99 / 0.90 / 0.47 /
0.04 at moatforge's 16 x 7 (~1.00 / 0.97 / 0.77 / 0.30 / 0.01 at FineWeb's 14 x 8): MinHash-LSH finds light
edits and deliberately lets heavily edited texts through.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from moatforge.curate.minhash import DEFAULT_BANDS, DEFAULT_ROWS

__all__ = ["SyntheticCorpus", "dedup_scores", "detection_probability", "make_corpus", "prose_document"]


def _vocabulary(text: str) -> list[str]:
    return text.split()


_NOUNS = _vocabulary("""
account agent analysis approach audit backlog balance batch benefit budget buyer campaign capacity carrier
catalog change channel charge checklist claim client committee contract contractor cost courier credit
customer cycle dashboard database deadline decision delivery department deposit design developer device
discount dispatch document draft engineer estimate exception expense export factory feature feedback figure
forecast freight fund guideline handover incident inventory invoice issue ledger license list manager margin
market meeting metric migration milestone model network notice objective office operator order outage owner
package partner payment payroll performance pipeline plan platform policy portal pricing printer priority
procedure process product profile program project proposal purchase quality quarter query quote record
refund region release report request requirement reserve resource response result return review revenue risk
roadmap route rule sample schedule scope sensor server service shipment signal site sprint staff standard
statement status stock store strategy summary supplier survey system target task team template tender test
ticket timeline tool transfer trend upgrade user vendor version volume warehouse warranty workflow workshop
""")
_VERBS = _vocabulary("""
accepted adjusted analysed approved archived assigned audited balanced blocked booked built calculated
cancelled changed checked cleared closed collected compared completed confirmed consolidated corrected created
delayed delivered deployed designed detected documented doubled drafted escalated estimated evaluated expanded
explained exported filed finished flagged forwarded grouped handled identified improved included increased
installed investigated launched limited listed loaded logged managed mapped matched measured merged migrated
monitored moved negotiated noted opened ordered organised packed paid patched planned posted prepared
presented priced printed processed published purchased raised reconciled recorded reduced refunded rejected
released removed renewed reorganised repaired replaced reported requested resolved restored reviewed revised
routed scheduled scanned secured selected shipped simplified sorted split standardised submitted summarised
supported suspended tested tracked trained transferred updated upgraded validated verified
""")
_ADJECTIVES = _vocabulary("""
accurate active additional annual automatic available basic broken careful central clear common complete
complex critical current daily detailed digital direct early effective entire existing expensive external
final financial flexible formal frequent full general global gradual heavy historical important initial
internal large late legal local major manual minor missing monthly national new nightly normal official old
open operational optional original overdue partial pending periodic popular positive previous primary
private quarterly quick rapid recent regional regular relevant reliable remote responsible revised routine
secure separate serious shared short significant simple single small special stable standard strong
successful sudden temporary typical unexpected unusual urgent useful valid visible weekly whole wide
""")
_ADVERBS = _vocabulary("""
carefully clearly closely correctly currently directly early eventually finally firmly formally frequently
fully gradually largely later manually mostly nearly normally officially partly quickly rarely recently
regularly reliably roughly safely slowly smoothly soon steadily strictly successfully temporarily typically
""")
_PLACES = _vocabulary("""
Berlin Dallas Singapore Lisbon Toronto Madrid Warsaw Austin Osaka Dublin Oslo Lyon Denver Leeds Porto Milan
""")
_PEOPLE = _vocabulary("""
Maria Tom Aisha Lukas Priya Jonas Chloe Daniel Hannah Marco Sofia Ben Elena Kenji Fatima Oliver Nina Ravi
""")

# Slots: N noun, V verb, A adjective, R adverb, P place, H person, D number.
_TEMPLATES = [
    "The {A} {N} was {V} by the {N} team after the {A} {N} in {P}.",
    "{H} {V} the {N} and {V} the {A} {N} before the end of the {N}.",
    "Because the {N} was {A}, the {N} {V} the {N} {R}.",
    "Our {A} {N} now covers {D} {N}s, which is why the {N} was {V} {R}.",
    "After a {A} review, the {N} {V} that the {N} should be {V} by {H}.",
    "In {P}, the {N} for the {A} {N} was {V} with {D} new {N}s.",
    "We {V} the {A} {N} so that the {N} could be {V} without a {A} {N}.",
    "The {N} from {P} {V} {D} {N}s, and the {N} {V} the rest {R}.",
    "{H} said the {A} {N} is {V} {R} and that the {N} remains {A}.",
    "If the {N} is {V} again, the {A} {N} will be {V} to the {N}.",
    "A {A} {N} {V} the {N}, so {H} {V} a {A} {N} for the {N}.",
    "It was {R} {V}, and the {N} for {P} has been {V} since the {A} {N}.",
    "Each {N} is {V} against the {N}, then {V} into the {A} {N}.",
    "The {A} {N} {V} by {D} percent while the {N} {V} the {A} {N}.",
    "{H} and {H} {V} the {N} with the {N} in {P} {R}.",
    "To keep the {N} {A}, the {N} team {V} every {N} on the {A} {N}.",
]
_SLOTS = {"N": _NOUNS, "V": _VERBS, "A": _ADJECTIVES, "R": _ADVERBS, "P": _PLACES, "H": _PEOPLE}
_EDIT_WORDS = _NOUNS + _VERBS + _ADJECTIVES


def _fill(template: str, rng: random.Random) -> str:
    out = []
    for i, part in enumerate(template.split("{")):
        if i == 0:
            out.append(part)
            continue
        slot, rest = part[0], part[2:]
        out.append(str(rng.randint(2, 480)) if slot == "D" else rng.choice(_SLOTS[slot]))
        out.append(rest)
    sentence = "".join(out)
    return sentence[0].upper() + sentence[1:]


def prose_document(rng: random.Random, min_words: int = 80, max_words: int = 400) -> str:
    """Paragraphs of 3-6 sentences until the document has between ``min_words`` and about ``max_words`` words."""
    target = rng.randint(min_words, max_words)
    paragraphs, n_words = [], 0
    while n_words < target:
        sentences = [_fill(rng.choice(_TEMPLATES), rng) for _ in range(rng.randint(3, 6))]
        n_words += sum(len(s.split()) for s in sentences)
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def edit_words(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """(text with ``max(1, round(rate * words))`` word edits at distinct positions, number of edits).

    Paragraph breaks are kept: words are edited within their paragraph.
    """
    paragraphs = [p.split(" ") for p in text.split("\n\n")]
    positions = [(p, i) for p, words in enumerate(paragraphs) for i in range(len(words))]
    k = max(1, round(rate * len(positions)))
    for p, i in sorted(rng.sample(positions, k), reverse=True):  # right to left keeps earlier positions valid
        op = rng.random()
        if op < 0.6:
            paragraphs[p][i] = rng.choice(_EDIT_WORDS)
        elif op < 0.8 and len(paragraphs[p]) > 1:
            del paragraphs[p][i]
        else:
            paragraphs[p].insert(i, rng.choice(_EDIT_WORDS))
    return "\n\n".join(" ".join(words) for words in paragraphs), k


def _junk(rng: random.Random, i: int) -> tuple[str, str]:
    kind = ("short", "keywords", "symbols", "repeated_lines", "bullets")[i % 5]
    if kind == "short":
        text = f"{_fill(rng.choice(_TEMPLATES), rng)} Ref {rng.randint(10**6, 10**7)}."
    elif kind == "keywords":
        text = " ".join(rng.choice(_NOUNS + _ADJECTIVES).upper() for _ in range(rng.randint(60, 120)))
    elif kind == "symbols":
        text = " ".join(f"#{rng.choice(_NOUNS)}{rng.randint(0, 99)} ## {rng.randint(0, 10**5)}" for _ in range(40))
    elif kind == "repeated_lines":
        line = _fill(rng.choice(_TEMPLATES), rng)
        text = "\n".join([line] * rng.randint(8, 16) + [_fill(rng.choice(_TEMPLATES), rng)])
    else:
        text = "\n".join(f"- {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}" for _ in range(rng.randint(20, 40)))
    return kind, text


@dataclass
class SyntheticCorpus:
    """Documents (``{"doc_id", "text"}``, shuffled) and the truth about each one.

    ``cluster`` maps every doc id to the id of the source it was copied from (itself for sources and junk), so
    the true duplicate clusters are the groups of equal ``cluster`` values. ``kind`` is ``source``, ``exact``,
    ``near`` or ``junk``; ``edit_rate`` and ``edits`` are set for near copies.
    """

    docs: list[dict]
    cluster: dict[str, str]
    kind: dict[str, str]
    edit_rate: dict[str, float] = field(default_factory=dict)
    edits: dict[str, int] = field(default_factory=dict)
    junk_kind: dict[str, str] = field(default_factory=dict)

    def text(self, doc_id: str) -> str:
        return self._by_id()[doc_id]

    def _by_id(self) -> dict[str, str]:
        if not hasattr(self, "_texts"):
            self._texts = {d["doc_id"]: d["text"] for d in self.docs}
        return self._texts

    def write_jsonl(self, folder: str | Path, shards: int = 1) -> list[Path]:
        """Write the documents as ``shards`` JSONL files (round robin) and return their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"part-{i:03d}.jsonl" for i in range(shards)]
        handles = [p.open("w", encoding="utf-8") for p in paths]
        try:
            for i, doc in enumerate(self.docs):
                handles[i % shards].write(json.dumps(doc, ensure_ascii=False) + "\n")
        finally:
            for h in handles:
                h.close()
        return paths


def make_corpus(
    n_docs: int,
    *,
    seed: int = 0,
    exact_frac: float = 0.08,
    near_frac: float = 0.12,
    junk_frac: float = 0.05,
    edit_rates: Iterable[float] = (0.01, 0.02, 0.03, 0.05, 0.1),
    min_words: int = 80,
    max_words: int = 400,
) -> SyntheticCorpus:
    """``n_docs`` documents, of which about ``exact_frac`` are exact and ``near_frac`` near copies of sources.

    Near copies cycle through ``edit_rates`` so that every rate gets the same number of copies. A source can
    receive several copies; copies are made of sources only (never of other copies).
    """
    rng = random.Random(seed)
    rates = list(edit_rates)
    n_exact, n_near, n_junk = round(n_docs * exact_frac), round(n_docs * near_frac), round(n_docs * junk_frac)
    n_source = n_docs - n_exact - n_near - n_junk
    if n_source < 1:
        raise ValueError("fractions leave no source documents")
    docs: list[dict] = []
    cluster: dict[str, str] = {}
    kind: dict[str, str] = {}
    corpus = SyntheticCorpus(docs, cluster, kind)
    sources = []
    for i in range(n_source):
        doc_id = f"src-{i:07d}"
        sources.append((doc_id, prose_document(rng, min_words, max_words)))
        cluster[doc_id], kind[doc_id] = doc_id, "source"
    docs.extend({"doc_id": d, "text": t} for d, t in sources)
    for i in range(n_exact):
        src_id, text = rng.choice(sources)
        doc_id = f"exact-{i:07d}"
        docs.append({"doc_id": doc_id, "text": text})
        cluster[doc_id], kind[doc_id] = src_id, "exact"
    for i in range(n_near):
        src_id, text = rng.choice(sources)
        rate = rates[i % len(rates)]
        doc_id = f"near-{i:07d}"
        edited, k = edit_words(text, rate, rng)
        docs.append({"doc_id": doc_id, "text": edited})
        cluster[doc_id], kind[doc_id] = src_id, "near"
        corpus.edit_rate[doc_id], corpus.edits[doc_id] = rate, k
    for i in range(n_junk):
        doc_id = f"junk-{i:07d}"
        corpus.junk_kind[doc_id], text = _junk(rng, i)
        docs.append({"doc_id": doc_id, "text": text})
        cluster[doc_id], kind[doc_id] = doc_id, "junk"
    rng.shuffle(docs)
    return corpus


def detection_probability(jaccard: float, bands: int = DEFAULT_BANDS, rows: int = DEFAULT_ROWS) -> float:
    """Probability that MinHash-LSH with ``bands`` x ``rows`` puts a pair of this Jaccard similarity in a bucket."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


def dedup_scores(removed: Iterable[str], cluster: Mapping[str, str]) -> dict:
    """Precision, recall and F1 of a dedup's removals against the true clusters, whichever member it kept.

    A true cluster of ``k`` documents should lose ``k - 1``: removals up to that count are correct, any
    beyond it (the whole cluster gone) and removals of documents without a duplicate are false positives.
    """
    removed = set(removed)
    unknown = removed - cluster.keys()
    if unknown:
        raise ValueError(f"{len(unknown)} removed ids are not in the corpus, e.g. {sorted(unknown)[:3]}")
    sizes = Counter(cluster.values())
    removed_per_cluster: dict[str, int] = defaultdict(int)
    for doc_id in removed:
        removed_per_cluster[cluster[doc_id]] += 1
    tp = sum(min(n, sizes[c] - 1) for c, n in removed_per_cluster.items())
    should = sum(k - 1 for k in sizes.values())
    precision = tp / len(removed) if removed else 1.0
    recall = tp / should if should else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "removed": len(removed),
        "true_duplicates": should,
        "correct": tp,
    }
