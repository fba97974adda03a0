"""Cost arithmetic and the price table: what a stage held, times what that costs."""

import pytest

from moatforge.config import load_config
from moatforge.errors import MoatforgeError
from moatforge.metrics import (
    DEFAULT_PRICES,
    TRAIN_METRICS,
    Resources,
    TrainRecorder,
    projected_cost,
    train_flops_per_token,
    usd_per_1m_tokens,
)


def test_cpu_run_is_billed_per_core_hour():
    r = Resources(workers=2, cpus_per_worker=1.5, accelerator="cpu_core")
    assert r.seconds(3600) == {"cpu_core": 2 * 1.5 * 3600}
    assert r.cost_usd(3600, DEFAULT_PRICES) == pytest.approx(3 * DEFAULT_PRICES["cpu_core"])


def test_gpu_run_pays_for_accelerators_and_their_cores():
    r = Resources(workers=4, cpus_per_worker=8, accelerator="H100")
    prices = {**DEFAULT_PRICES, "H100": 2.0, "cpu_core": 0.05}
    # 30 minutes: 4 GPUs x 0.5 h x $2 + 32 cores x 0.5 h x $0.05
    assert r.cost_usd(1800, prices) == pytest.approx(4 * 0.5 * 2.0 + 32 * 0.5 * 0.05)
    assert r.peak_flops(1e11) == pytest.approx(4 * 989e12)


def test_price_overrides_merge_with_the_defaults():
    cfg = load_config(None, ["cost.prices.H100=2.25", "cost.budget_usd=10"])
    assert cfg.cost.prices["H100"] == 2.25
    assert cfg.cost.prices["A100"] == DEFAULT_PRICES["A100"]
    with pytest.raises(MoatforgeError, match="negative"):
        load_config(None, ["cost.prices.cpu_core=-1"])
    with pytest.raises(MoatforgeError, match="budget_usd"):
        load_config(None, ["cost.budget_usd=0"])


def test_flops_projection_and_per_token_cost():
    assert train_flops_per_token(100, 100) == 600  # the 6N rule for a full fine-tune
    assert train_flops_per_token(100, 1) == 402  # LoRA: ~4N
    assert projected_cost(1.0, 10, 40) == pytest.approx(4.0)
    assert projected_cost(1.0, 0, 40) == 1.0
    assert usd_per_1m_tokens(2.0, 500_000) == pytest.approx(4.0)
    assert usd_per_1m_tokens(2.0, 0) is None


def test_recorder_step_fields_and_budget_decision():
    rec = TrainRecorder(
        labels={"run": "r", "stage": "train", "model": "m"},
        resources=Resources(1, 2, "cpu_core"),
        prices=DEFAULT_PRICES,
        flops_per_token=600.0,
        cpu_peak_flops_per_core=1e3,
        budget_usd=0.05,
        enabled=False,
    )
    out = rec.step(
        tokens=10,
        samples=2,
        step_time=2.0,
        loss=1.0,
        wall_s=1800,
        productive_s=900,
        cost_before=0.01,
        steps_done=1,
        total_steps=4,
        tokens_total=10,
    )
    cost = 0.01 + 2 * 0.5 * DEFAULT_PRICES["cpu_core"]
    assert out["cost_usd"] == pytest.approx(cost)
    assert out["projected_cost_usd"] == pytest.approx(cost * 4)
    assert out["mfu"] == pytest.approx(600 * 5 / 2e3)
    assert out["goodput"] == pytest.approx(0.5)
    assert rec.over_budget(out["projected_cost_usd"]) is True
    assert rec.over_budget(0.04) is False


def test_metric_names_are_unique_and_labels_bounded():
    names = [m.name for m in TRAIN_METRICS]
    assert len(names) == len(set(names))
    allowed = {"run", "stage", "model", "deployment", "resource", "step", "reason", "code"}
    for m in TRAIN_METRICS:
        assert set(m.labels) <= allowed, m
        assert m.exported_name.startswith("ray_moatforge_")
        assert m.exported_name.endswith("_total") == (m.kind == "counter")


def test_serving_is_priced_by_the_run_price_table_unless_serve_overrides_it():
    from moatforge.metrics import serve_cost_per_hour
    from moatforge.serve.run import app_args

    cfg = load_config(None, ["cost.prices.cpu_core=0.5", "cost.prices.H200=9", "cost.accelerator=H200"])
    args = app_args(cfg)
    assert args["prices"]["cpu_core"] == 0.5 and args["accelerator"] == "H200"
    assert serve_cost_per_hour(2, 1, args["accelerator"], args["prices"]) == 2 * 0.5 + 9
    cfg = load_config(None, ["cost.prices.cpu_core=0.5", "serve.prices.cpu_core=0.25", "serve.accelerator=L4"])
    args = app_args(cfg)
    assert args["prices"]["cpu_core"] == 0.25 and args["accelerator"] == "L4"
    assert args["prices"]["H100"] == DEFAULT_PRICES["H100"]  # the defaults stay under the overrides


def test_a_driver_waits_for_one_metrics_export_only_on_a_cluster_that_outlives_it(monkeypatch):
    from moatforge.metrics import metrics_flush_seconds, wait_for_metrics_export

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert metrics_flush_seconds(None) == 0 and wait_for_metrics_export(None) == 0
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "200")
    assert metrics_flush_seconds("10.0.0.1:6379") == pytest.approx(1.2)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # under `ray job submit`
    lines = []
    assert wait_for_metrics_export(None, lines.append) == pytest.approx(1.2)
    assert "metrics export" in lines[0]
