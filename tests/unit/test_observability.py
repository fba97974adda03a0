"""The metric reference, Prometheus config and alert rules, Grafana dashboards: in sync with the specs and valid.

promtool comes from Debian's ``prometheus`` package (installed by ``make setup`` and ``.ci/run``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from moatforge.metrics import (
    ALL_METRICS,
    CURATE_METRICS,
    DEFAULT_PRICES,
    SERVE_METRICS,
    ServeRecorder,
    metrics_doc,
    record_curate,
    serve_cost_per_hour,
)

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "cluster" / "prometheus"
GRAFANA = ROOT / "cluster" / "grafana"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))
ALLOWED_LABELS = {"run", "stage", "model", "deployment", "resource", "step", "reason", "code"}


def exported_series() -> set[str]:
    names = set()
    for specs in ALL_METRICS.values():
        for spec in specs:
            if spec.kind == "histogram":
                names |= {f"{spec.exported_name}_{suffix}" for suffix in ("bucket", "sum", "count")}
            else:
                names.add(spec.exported_name)
    return names


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install Debian's prometheus package (make setup does)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, cwd=PROM)


def test_metrics_doc_is_in_sync_with_the_specs():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert doc == metrics_doc(), "docs/metrics.md is stale: run `python -m moatforge.metrics > docs/metrics.md`"
    for spec in SERVE_METRICS + CURATE_METRICS:
        assert f"`{spec.exported_name}`" in doc


def test_every_metric_is_unique_with_bounded_labels():
    specs = [s for group in ALL_METRICS.values() for s in group]
    assert len({s.name for s in specs}) == len(specs)
    for s in specs:
        assert set(s.labels) <= ALLOWED_LABELS, s
        assert s.kind in ("counter", "gauge", "histogram")
        assert bool(s.buckets) == (s.kind == "histogram"), s
        assert s.exported_name.startswith("ray_moatforge_")


def test_promtool_checks_the_config_and_rules_and_runs_the_rule_unit_tests():
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_alerts_cover_the_issue_and_are_unit_tested():
    rules = [r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert names == {
        "MoatforgeTrainingStalled",
        "MoatforgeGoodputLow",
        "MoatforgeBudgetBurn",
        "MoatforgeServeLatencyHigh",
        "MoatforgeServeErrorRate",
        "MoatforgeServeNoHealthyReplicas",
    }
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tests for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert fired == names and quiet == names  # each alert fires in one case and stays quiet in another
    known = exported_series() | {"ray_serve_deployment_replica_healthy"}
    for rule in rules:
        assert set(re.findall(r"ray_[a-z0-9_]+", rule["expr"])) <= known, rule["alert"]


def test_prometheus_scrapes_rays_service_discovery_file():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    ray_job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "ray")
    files = ray_job["file_sd_configs"][0]["files"]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]
    assert cfg["rule_files"] == ["alerts.yml"]


def test_dashboards_query_only_documented_series():
    assert {p.name for p in DASHBOARDS} >= {
        "moatforge-training.json",
        "moatforge-serving.json",
        "moatforge-curation.json",
    }
    known = exported_series() | {"ray_serve_deployment_replica_healthy"}
    uids = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["uid"] not in uids
        uids.add(dash["uid"])
        panels = [p for p in dash["panels"] if p["type"] != "row"]
        assert panels, path.name
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids))
        for panel in panels:
            assert panel["targets"], (path.name, panel["title"])
            for target in panel["targets"]:
                used = set(re.findall(r"ray_[a-z0-9_]+", target["expr"]))
                assert used and used <= known, (path.name, panel["title"], used - known)
    kustomization = yaml.safe_load((GRAFANA / "kustomization.yaml").read_text())
    assert set(kustomization["configMapGenerator"][0]["files"]) == {p.name for p in DASHBOARDS}


def test_grafana_provisioning_files():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "moatforge.yml").read_text())
    assert prov["providers"][0]["type"] == "file" and prov["providers"][0]["options"]["path"]


def test_serve_cost_arithmetic():
    prices = {**DEFAULT_PRICES, "L4": 0.8, "cpu_core": 0.05}
    assert serve_cost_per_hour(2, 0, "cpu_core", prices) == pytest.approx(0.10)
    assert serve_cost_per_hour(4, 0.5, "L4", prices) == pytest.approx(4 * 0.05 + 0.5 * 0.8)
    rec = ServeRecorder("LLMServer", "m", cost_per_hour=3.6, interval_s=3600, enabled=False)
    try:
        rec.add_time(10)  # 10 s at $3.6/h
        rec.finished(prompt_tokens=5, generated_tokens=1000, ttft_s=0.1)
        assert rec.cost == pytest.approx(0.01)
        assert rec.generated == 1000
    finally:
        rec.close()


def test_serve_recorder_accrues_cost_in_the_background():
    rec = ServeRecorder("LLMServer", "m", cost_per_hour=3600.0, interval_s=0.05, enabled=False)
    time.sleep(0.3)
    rec.close()
    assert 0.1 < rec.cost < 1.0  # ~$1 per second, for ~0.3 s


def test_record_curate_reads_the_manifest():
    manifest = {
        "inputs": [{"path": "a.jsonl", "size": 100}, {"path": "b.jsonl", "size": 50}],
        "rows_read": 10,
        "rows_kept": 7,
        "rows_rejected": 3,
        "rejected": {"quality": {"too_short": 2}, "exact_dedup": {"exact_duplicate": 1}},
        "redactions": {"EMAIL": 2},
        "seconds_per_step": {"quality": 0.5},
        "wall_time_s": 2.0,
    }
    values = record_curate(manifest, "r", enabled=False)
    assert values["moatforge_curate_rows_read"] == 10
    assert values["moatforge_curate_rows_kept"] == 7
    assert values["moatforge_curate_bytes_read"] == 150
    assert values["moatforge_curate_rows_per_second"] == pytest.approx(5.0)
