"""The demo's dirty export, curated with the demo steps: the planted dirt goes, the clean rows stay."""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq

from moatforge.config import load_config
from moatforge.curate.pipeline import demo_steps, format_summary, run_curate
from moatforge.curate.steps import build_ngram_index
from moatforge.curate.text_utils import row_text, words
from moatforge.sample_data import junk_expected_step, write_dirty_sample_data

DEDUP = ("exact_dedup", "near_dedup")


def test_curating_the_dirty_sample_removes_the_planted_dirt(ray_cluster, tmp_path):
    paths = write_dirty_sample_data(tmp_path / "data", seed=0, n_train=400, n_eval=60)
    truth = json.loads(paths["truth"].read_text())
    labels, copy_of = truth["labels"], {int(k): v for k, v in truth["copy_of"].items()}
    raw_lines = paths["raw"].read_text().splitlines()
    out = tmp_path / "clean"
    cfg = load_config(None, [f"curate.input={paths['raw']}", f"curate.output={out}"])
    cfg.curate.steps = demo_steps([str(paths["eval"])])
    started = time.time()
    manifest = run_curate(cfg)
    print(f"demo curation took {time.time() - started:.1f}s")
    assert manifest["rows_read"] == len(labels) == manifest["rows_kept"] + manifest["rows_rejected"]

    kept = pq.read_table(out / "data").to_pylist()
    rejects = pq.read_table(out / "rejects").to_pylist()

    def position(row: dict) -> int:
        if row["meta"]:
            return json.loads(row["meta"])["export_row"]
        return int(row["source"].rsplit(":", 1)[1]) - 1  # rows that failed to parse: their line

    step_of = {position(r): r["step"] for r in rejects}
    kept_at = {position(r): r for r in kept}
    assert len(step_of) + len(kept_at) == len(labels)
    parent = {r["id"]: r["dup_of"] for r in rejects if r["step"] in DEDUP}
    id_at = {position(r): r["id"] for r in kept + rejects}

    def representative(pos: int) -> str:
        row_id = id_at[pos]
        while row_id in parent:
            row_id = parent[row_id]
        return row_id

    eval_rows = [json.loads(line) for line in paths["eval"].read_text().splitlines()]
    eval_texts = [m["content"] for r in eval_rows for m in r["messages"] if m["role"] in ("user", "assistant")]
    index = build_ngram_index([t for t in eval_texts if isinstance(t, str)], n=13)

    lengths = {g.count(" ") + 1 for g in index}  # 13, and whole eval texts shorter than that

    def shares_eval_gram(pos: int) -> bool:
        tokens = words(row_text({"messages": json.dumps(json.loads(raw_lines[pos])["messages"])}))
        return any(" ".join(tokens[i : i + n]) in index for n in lengths for i in range(len(tokens) - n + 1))

    for pos, label in enumerate(labels):
        if label == "junk":
            row = (
                raw_lines[pos]
                if raw_lines[pos].startswith('{"messages": [{"role": "user", "content": "Refund')
                else json.loads(raw_lines[pos])
            )
            assert step_of.get(pos) == junk_expected_step(row), (pos, raw_lines[pos])  # fmt: skip
        elif label == "leaked_eval":
            assert pos not in kept_at and step_of[pos] in ("decontaminate", *DEDUP), pos
        elif label in ("exact_dup", "near_dup"):
            assert representative(pos) == representative(copy_of[pos]), (pos, label)  # merged with its source
        elif pos not in kept_at:  # clean rows go only as duplicates (the generator repeats some small talk) ...
            assert step_of[pos] in DEDUP or (step_of[pos] == "decontaminate" and shares_eval_gram(pos)), pos
    # ... or when they really share a 13-gram with eval: the generator's phrase pools are common to both splits
    clean = [p for p, label in enumerate(labels) if label in ("clean", "clean_pii")]
    assert sum(step_of.get(p) == "decontaminate" for p in clean) <= 0.02 * len(clean)
    leaked_caught = sum(step_of.get(p) == "decontaminate" for p, label in enumerate(labels) if label == "leaked_eval")
    assert leaked_caught == labels.count("leaked_eval")
    assert manifest["rejected"]["exact_dedup"]["exact_duplicate"] >= labels.count("exact_dup")
    assert manifest["rejected"]["near_dedup"]["near_duplicate"] >= labels.count("near_dup")
    assert manifest["rows_kept"] >= 0.85 * (labels.count("clean") + labels.count("clean_pii"))

    text = json.dumps([r["messages"] for r in kept])
    assert "example.com" not in text and "4111 1111" not in text and "415-555-01" not in text
    assert "<EMAIL>" in text and "<PHONE>" in text and "<CREDIT_CARD>" in text
    assert all(manifest["redactions"].get(k, 0) > 0 for k in ("email", "phone", "credit_card"))

    summary = format_summary(manifest)
    assert summary.splitlines()[0].startswith(f"[curate] read {len(labels)} rows: kept {manifest['rows_kept']}")
    steps_in_order = [line.split()[1] for line in summary.splitlines()[1:] if not line.startswith("[curate] redacted")]
    assert steps_in_order == ["read", "normalize", "chat_validate", "quality", "exact_dedup", "near_dedup", "decontaminate"]  # fmt: skip
    assert "redacted: " in summary and "email=" in summary
