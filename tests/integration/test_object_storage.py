"""run.storage_path on object storage: checkpoints, run files and the final model land in S3, and resume works."""

from __future__ import annotations

import json

import boto3
import pytest

from moatforge.train.run import run_training

from .helpers import sample_rows, tiny_config, write_rows


@pytest.mark.slow
def test_train_to_s3_and_resume(ray_cluster, s3_endpoint, tiny_model_dir, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="moatforge-runs")
    train = write_rows(tmp_path / "train.jsonl", sample_rows(8))
    cfg = tiny_config(tmp_path, tiny_model_dir, train, "s3run", "train.max_steps=2", "train.checkpoint_every_steps=1")
    cfg.run.storage_path = "s3://moatforge-runs/team-a"
    summary = run_training(cfg)
    assert summary["status"] == "finished" and summary["run_dir"] == "s3://moatforge-runs/team-a/s3run"

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="moatforge-runs", Prefix="team-a/s3run/")["Contents"]}
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "final/model/config.json",
        "final/model/model.safetensors",
    ):
        assert f"team-a/s3run/{name}" in keys, name
    assert any("/checkpoint_" in k for k in keys)
    metrics = s3.get_object(Bucket="moatforge-runs", Key="team-a/s3run/metrics.jsonl")["Body"].read().decode()
    assert [json.loads(line)["step"] for line in metrics.splitlines()] == [1, 2]

    again = run_training(cfg)
    assert again["resumed_from_steps"] == [2]
