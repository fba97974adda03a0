"""Cost accounting in a real run whose storage is object storage (S3 on moto): a budget stops the run with a
checkpoint in the bucket, and a re-run with more budget resumes from it and writes every run file there.

One test for both concerns: each Ray Train run costs ~1 minute of the suite on two cores, and stopping and
resuming through S3 is the harder path for both the budget checkpoint and storage.
"""

from __future__ import annotations

import json

import boto3
import pytest

from moatforge.errors import MoatforgeError
from moatforge.metrics import DEFAULT_PRICES
from moatforge.train.run import run_training

from .helpers import sample_rows, tiny_config, write_rows

pytestmark = pytest.mark.slow
BUCKET, PREFIX = "moatforge-runs", "team-a/budget"


def _read(s3, name: str) -> str:
    return s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")["Body"].read().decode()


def test_budget_stop_to_s3_and_a_rerun_with_more_budget_resumes_and_finishes(
    ray_cluster, s3_endpoint, tiny_model_dir, tmp_path
):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    train = write_rows(tmp_path / "train.jsonl", sample_rows(16))
    common = ("train.zero_stage=1", "train.max_steps=4", "train.checkpoint_every_steps=10")

    def config(budget: str):
        cfg = tiny_config(tmp_path, tiny_model_dir, train, "budget", *common, f"cost.budget_usd={budget}")
        cfg.run.storage_path = "s3://moatforge-runs/team-a"
        return cfg

    with pytest.raises(MoatforgeError, match=r"stopped at step 1/4: .*exceeds cost.budget_usd=1e-06.*re-run"):
        run_training(config("0.000001"))
    summary = json.loads(_read(s3, "summary.json"))
    assert summary["status"] == "stopped_budget" and summary["steps"] == 1
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")["Contents"]}
    assert summary["final_model"] is None and not any("/final/" in k for k in keys)
    assert any("/checkpoint_" in k for k in keys)  # the budget checkpoint is in the bucket
    spent = summary["cost_usd"]
    assert spent > 0

    summary = run_training(config("100"))
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert summary["run_dir"] == f"s3://{BUCKET}/{PREFIX}"
    assert summary["resumed_from_steps"] == [1]  # continued from the budget checkpoint, not from scratch
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")["Contents"]}
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "final/model/config.json",
        "final/model/model.safetensors",
    ):
        assert f"{PREFIX}/{name}" in keys, name
    metrics = [json.loads(line) for line in _read(s3, "metrics.jsonl").splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        assert 0 < m["goodput"] <= 1 and m["mfu"] > 0
    # Cost only grows, includes the first invocation, and matches the price table: 2 workers x 1 core.
    costs = [m["cost_usd"] for m in metrics]
    assert costs == sorted(costs) and costs[1] > spent
    wall = summary["wall_time_s"]
    assert costs[-1] - spent <= 2 * DEFAULT_PRICES["cpu_core"] * wall / 3600 * 1.01
    assert summary["usd_per_1m_tokens"] == pytest.approx(costs[-1] / summary["tokens"] * 1e6, rel=1e-6)
