"""``moatforge curate`` reads its input from and writes its output to object storage (moto's S3 server)."""

from __future__ import annotations

import io
import json

import boto3
import pyarrow.parquet as pq

from moatforge.config import load_config
from moatforge.curate.pipeline import run_curate
from moatforge.curate.synthetic import make_corpus


def test_curate_from_s3_to_s3(ray_cluster, s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="curate-data")
    corpus = make_corpus(60, seed=3, exact_frac=0.1, near_frac=0.0, junk_frac=0.1)
    lines = [json.dumps(d) for d in corpus.docs]
    s3.put_object(Bucket="curate-data", Key="raw/a.jsonl", Body="\n".join(lines[:30]) + "\n")
    s3.put_object(Bucket="curate-data", Key="raw/more/b.jsonl", Body="\n".join(lines[30:]) + "\n{broken\n")

    cfg = load_config(
        None,
        [
            "curate.input=s3://curate-data/raw/",
            "curate.output=s3://curate-data/clean",
            "curate.steps=[{name: normalize}, {name: quality, c4: false, fineweb: false}, {name: exact_dedup}]",
        ],
    )
    manifest = run_curate(cfg)
    assert manifest["rows_read"] == 61 == manifest["rows_kept"] + manifest["rows_rejected"]
    assert manifest["rejected"]["read"] == {"invalid_json": 1}
    assert manifest["rejected"]["exact_dedup"] == {"exact_duplicate": 6}
    assert sum(manifest["rejected"]["quality"].values()) == 6
    assert [i["path"] for i in manifest["inputs"]] == [
        "s3://curate-data/raw/a.jsonl",
        "s3://curate-data/raw/more/b.jsonl",
    ]

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="curate-data", Prefix="clean/")["Contents"]]
    assert "clean/manifest.json" in keys
    stored = json.loads(s3.get_object(Bucket="curate-data", Key="clean/manifest.json")["Body"].read())
    assert stored["rows_kept"] == manifest["rows_kept"] == 48

    def rows(prefix: str) -> list[dict]:
        out = []
        for key in keys:
            if key.startswith(prefix) and key.endswith(".parquet"):
                body = s3.get_object(Bucket="curate-data", Key=key)["Body"].read()
                out.extend(pq.read_table(io.BytesIO(body)).to_pylist())
        return out

    kept, rejects = rows("clean/data/"), rows("clean/rejects/")
    assert len(kept) == 48 and len(rejects) == 13
    kept_docs = [json.loads(r["meta"])["doc_id"] for r in kept]
    assert not any(corpus.kind[d] == "junk" for d in kept_docs)
    assert len({corpus.cluster[d] for d in kept_docs}) == len(kept_docs)  # one document per duplicate cluster
    assert rejects[0]["source"].startswith("s3://curate-data/raw/")
