"""``moatforge curate`` end to end on a local Ray cluster: every dropped row audited, counts conserved."""

from __future__ import annotations

import gzip
import json
import random

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moatforge.config import load_config
from moatforge.curate.pipeline import run_curate
from moatforge.data import list_data_files, normalize_row
from moatforge.errors import MoatforgeError

WORDS = [
    "the",
    "team",
    "reviewed",
    "invoice",
    "payments",
    "and",
    "shipping",
    "delays",
    "with",
    "the",
    "warehouse",
    "staff",
    "before",
    "the",
    "quarterly",
    "report",
    "was",
    "sent",
    "to",
    "finance",
    "so",
    "that",
    "every",
    "customer",
    "order",
    "could",
    "be",
    "reconciled",
    "against",
    "the",
    "ledger",
]


def prose(rng: random.Random, sentences: int = 7) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(9, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def near_copy(rng: random.Random, text: str, edits: int = 3) -> str:
    words = text.split(" ")
    for _ in range(edits):
        words[rng.randrange(len(words))] = rng.choice(["vendor", "ticket", "refund"])
    return " ".join(words)


CHAT_OK = {
    "messages": [
        {"role": "user", "content": "Status of ORD-12345 please, reply to ana@example.com"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_order_status", "arguments": '{"order_id": "ORD-12345"}'}}
            ],
        },
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_order_status",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                },
            },
        }
    ],
    "team": "support",
}
CHAT_BAD = {**CHAT_OK, "messages": [CHAT_OK["messages"][0], {**CHAT_OK["messages"][1], "tool_calls": [
    {"type": "function", "function": {"name": "delete_everything", "arguments": "{}"}}]}]}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(7)
    root = tmp_path_factory.mktemp("raw")
    docs = [prose(rng) for _ in range(12)]
    docs[2] = prose(rng, sentences=20)  # long enough that 3 edits keep Jaccard ~0.85, above 14x8 LSH's knee
    rows = [{"text": d, "source_system": "wiki"} for d in docs]
    rows += [{"text": docs[0]}, {"text": docs[1]}]  # exact duplicates
    rows += [{"text": near_copy(rng, docs[2])}]  # near duplicate
    rows += [{"text": "lorem ipsum " * 30}, {"text": "Too short."}]  # low quality
    rows += [{"text": prose(rng) + " Call me at +1 415-555-0199 or mail bob.smith@corp.example.com."}]
    rows += [CHAT_OK, CHAT_BAD]
    with (root / "export.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write("{this is not json\n")
        f.write(json.dumps({"no_text": True}) + "\n")
        f.write(json.dumps({"text": 42}) + "\n")
    with (root / "bytes.jsonl").open("wb") as f:
        f.write(b'{"text": "\xff\xfe broken"}\n')
    with gzip.open(root / "more.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": prose(rng)}) + "\n")
    (root / "notes").mkdir()
    (root / "notes" / "page.md").write_text(prose(rng))
    pd.DataFrame({"text": [prose(rng), docs[3]]}).to_csv(root / "tickets.csv", index=False)
    pq.write_table(pa.table({"text": [prose(rng)]}), root / "docs.parquet")
    return root


def _curate(tmp_path, corpus, *extra):
    out = tmp_path / "clean"
    cfg = load_config(None, [f"curate.input={corpus}", f"curate.output={out}", *extra])
    return run_curate(cfg), out


def test_curate_end_to_end(ray_cluster, corpus, tmp_path):
    manifest, out = _curate(tmp_path, corpus)
    assert manifest["rows_read"] == 29
    assert manifest["rows_read"] == manifest["rows_kept"] + manifest["rows_rejected"]
    rej = manifest["rejected"]
    assert rej["read"] == {"invalid_json": 1, "no_text_or_messages": 1, "text_not_a_string": 1, "undecodable_bytes": 1}
    assert rej["exact_dedup"] == {"exact_duplicate": 3}  # two in the JSONL, one in the CSV
    assert rej["near_dedup"] == {"near_duplicate": 1}
    assert sum(rej["quality"].values()) == 2
    assert rej["chat_validate"] == {"unknown_tool": 1}
    assert manifest["redactions"]["email"] == 2 and manifest["redactions"]["phone"] == 1
    assert len(manifest["inputs"]) == 6 and all(len(i["sha256"]) == 64 for i in manifest["inputs"])

    kept = pq.read_table(out / "data").to_pandas()
    rejects = pq.read_table(out / "rejects").to_pandas()
    assert len(kept) == manifest["rows_kept"] and len(rejects) == manifest["rows_rejected"]
    assert kept["id"].is_unique
    bad = rejects[rejects["reason"] == "invalid_json"].iloc[0]
    assert bad["source"].endswith("export.jsonl:21") and bad["step"] == "read"
    assert not kept["text"].fillna("").str.contains("bob.smith@corp").any()
    chat = kept[kept["messages"].notna()].iloc[0]
    args = json.loads(json.loads(chat["messages"])[1]["tool_calls"][0]["function"]["arguments"])
    assert args == {"order_id": "ORD-12345"}
    assert json.loads(chat["meta"]) == {"team": "support"}
    assert "<EMAIL>" in json.loads(chat["messages"])[0]["content"]
    # moatforge train reads a curate output folder as data.train
    files = list_data_files(str(out))
    assert files and all("/data/" in f for f in files)
    for row in pq.read_table(out / "data").to_pylist():
        normalize_row({k: v for k, v in row.items() if v is not None})


def test_same_kept_set_with_many_blocks(ray_cluster, corpus, tmp_path):
    import ray.data

    one, out_one = _curate(tmp_path / "a", corpus)
    ctx = ray.data.DataContext.get_current()
    old = ctx.target_max_block_size
    ctx.target_max_block_size = 1024  # forces many blocks through every step and shuffle
    try:
        many, out_many = _curate(tmp_path / "b", corpus)
    finally:
        ctx.target_max_block_size = old
    assert sorted(pq.read_table(out_one / "data")["id"].to_pylist()) == sorted(
        pq.read_table(out_many / "data")["id"].to_pylist()
    )
    assert one["rejected"] == many["rejected"]


def test_decontamination_and_errors(ray_cluster, corpus, tmp_path):
    leaked = json.loads((corpus / "export.jsonl").read_text().splitlines()[5])["text"]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"messages": [{"role": "user", "content": leaked}]}) + "\n")
    steps = f'curate.steps=[{{name: normalize}}, {{name: decontaminate, eval_files: ["{eval_file}"]}}]'
    manifest, _ = _curate(tmp_path, corpus, steps)
    assert manifest["rejected"]["decontaminate"] == {"eval_overlap": 1}

    with pytest.raises(MoatforgeError, match="unknown step 'dedupe'; valid steps"):
        _curate(tmp_path / "x", corpus, "curate.steps=[{name: dedupe}]")
    with pytest.raises(MoatforgeError, match="does not exist"):
        _curate(tmp_path / "y", tmp_path / "missing")
    with pytest.raises(MoatforgeError, match="already exists"):
        _curate(tmp_path, corpus)
