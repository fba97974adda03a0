"""Cost accounting in a real run, and a budget that stops a run with a checkpoint it can resume from."""

from __future__ import annotations

import json

import pytest

from moatforge.errors import MoatforgeError
from moatforge.metrics import DEFAULT_PRICES
from moatforge.train.run import run_training

from .helpers import read_jsonl, sample_rows, tiny_config, write_rows


def test_budget_stops_with_a_checkpoint_and_a_rerun_with_more_budget_finishes(ray_cluster, tiny_model_dir, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", sample_rows(16))
    common = ("train.zero_stage=1", "train.max_steps=4", "train.checkpoint_every_steps=10")
    cfg = tiny_config(tmp_path, tiny_model_dir, train, "budget", *common, "cost.budget_usd=0.000001")
    with pytest.raises(MoatforgeError, match=r"stopped at step 1/4: .*exceeds cost.budget_usd=1e-06.*re-run"):
        run_training(cfg)
    run_dir = tmp_path / "runs" / "budget"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped_budget" and summary["steps"] == 1
    assert summary["final_model"] is None and not (run_dir / "final").exists()
    spent = summary["cost_usd"]
    assert spent > 0

    cfg = tiny_config(tmp_path, tiny_model_dir, train, "budget", *common, "cost.budget_usd=100")
    summary = run_training(cfg)
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert summary["resumed_from_steps"] == [1]  # continued from the budget checkpoint, not from scratch
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        assert 0 < m["goodput"] <= 1 and m["mfu"] > 0
    # Cost only grows, includes the first invocation, and matches the price table: 2 workers x 1 core.
    costs = [m["cost_usd"] for m in metrics]
    assert costs == sorted(costs) and costs[1] > spent
    wall = summary["wall_time_s"]
    assert costs[-1] - spent <= 2 * DEFAULT_PRICES["cpu_core"] * wall / 3600 * 1.01
    assert summary["usd_per_1m_tokens"] == pytest.approx(costs[-1] / summary["tokens"] * 1e6, rel=1e-6)
