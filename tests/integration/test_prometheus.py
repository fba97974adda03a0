"""A real Prometheus (Debian's package) scrapes the session's Ray cluster through the service-discovery file Ray
writes, while a curate run, a short training run and a live Serve app work; then every PromQL expression of every
Grafana panel and alert rule must return data, and the cost series must agree with the price table.

Prometheus runs on loopback with a temporary copy of ``cluster/prometheus/prometheus.yml`` (1 s scrapes, the SD
file of this Ray session rather than ``/tmp/ray``'s link, which another Ray on the machine may own) and
``alerts.yml`` loaded as is. Dashboard variables are substituted the way Grafana does with "All" selected.
Gauges of a finished process age out of Ray's export, so expressions are range queries over the test's window,
as Grafana sends them, and "returns data" means at least one finite sample.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from moatforge.config import load_config
from moatforge.metrics import DEFAULT_PRICES

from .helpers import read_jsonl, sample_rows, tiny_config, write_rows

requests = pytest.importorskip("requests")

ROOT = Path(__file__).resolve().parents[2]
# The integration conftest runs this module first: late in the suite the session's Ray metrics agent serves
# ~8 MB (Ray Data's per-dataset series from every earlier test) and takes 1-11 s per scrape, beyond the 1 s
# scrape this module needs for rate() over a short workload.


PROM_DIR = ROOT / "cluster" / "prometheus"
GRAFANA_DIR = ROOT / "cluster" / "grafana"
CPU_PRICE = 3.6  # USD per core-hour in the training run: $0.001 per core-second, far from the default
KEY = "sk-prom-" + "0" * 16
SERVED = '{model="tiny-prom"}'  # other modules of the session may serve their own models
GRAFANA_VARS = {"$__rate_interval": "15s", "$run": ".*", "$deployment": ".*", "$model": ".*"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Prom:
    def __init__(self, url: str):
        self.url = url

    def _get(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def instant(self, expr: str) -> list[dict]:
        return self._get("/api/v1/query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.instant(expr)
        return float(result[0]["value"][1]) if result else None

    def range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        return self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"]

    def finite(self, expr: str, start: float, end: float) -> list[float]:
        return [
            float(v) for series in self.range(expr, start, end) for _, v in series["values"] if math.isfinite(float(v))
        ]

    def last(self, expr: str, start: float, end: float) -> float:
        """The latest finite sample of a single-series expression over a window."""
        (series,) = self.range(expr, start, end)
        return [float(v) for _, v in series["values"] if math.isfinite(float(v))][-1]

    def label_values(self, label: str, metric: str) -> list[str]:
        return self._get(f"/api/v1/label/{label}/values", **{"match[]": metric})


@pytest.fixture(scope="module")
def prometheus(ray_cluster, tmp_path_factory):
    exe = shutil.which("prometheus")
    assert exe, "prometheus not found: install Debian's prometheus package (make setup does)"
    from ray._private.worker import global_worker

    session_dir = Path(global_worker.node.get_session_dir_path())
    sd_file = session_dir / "prom_metrics_service_discovery.json"
    # Ray's dashboard writes the file every few seconds (the fixture starts Ray with the dashboard for this).
    _wait(sd_file.exists, 30, f"Ray's service-discovery file {sd_file}")
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(PROM_DIR / f) for f in cfg["rule_files"]]
    ray_job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "ray")
    assert ray_job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    ray_job["file_sd_configs"][0]["files"] = [str(sd_file)]
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = _free_port()
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "prometheus.log", "w"),  # noqa: SIM115 - the file lives as long as the process
    )
    prom = Prom(f"http://127.0.0.1:{port}")
    try:

        def ready():
            assert proc.poll() is None, (work / "prometheus.log").read_text()
            with contextlib.suppress(OSError):
                return urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2).status == 200
            return False

        _wait(ready, 30, "Prometheus to start")
        _wait(lambda: prom.value('sum(up{job="ray"})'), 30, "a Ray metrics agent to be scraped")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _curate(tmp_path: Path) -> dict:
    from moatforge.curate.pipeline import run_curate

    rows = [
        {"text": f"Please note that the invoice for your order was paid in full; write to billing{i}@example.com."}
        for i in range(12)
    ]
    rows += rows[:3]  # exact duplicates
    rows += [{"text": "too short"}]
    src = write_rows(tmp_path / "raw" / "export.jsonl", rows, extra_lines=("{not json",))
    cfg = load_config(
        None,
        [
            "run.name=prom-curate",
            f"curate.input={src}",
            f"curate.output={tmp_path / 'clean'}",
            "curate.steps=[{name: normalize}, {name: quality, c4: false, fineweb: false, min_doc_words: 3}, {name: exact_dedup}, {name: pii}]",
        ],
    )
    return run_curate(cfg, printer=lambda *_: None)


def _serve(tiny_model_dir):
    from ray import serve

    from moatforge.serve import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    os.environ["MOATFORGE_API_KEYS"] = KEY
    try:
        app = build_app(
            {
                "model": str(tiny_model_dir),
                "model_name": "tiny-prom",
                "max_batch_size": 8,
                "max_context": 256,
                "torch_threads": 1,
                "engine": {"num_cpus": 1},
                "ingress": {"num_cpus": 0.5},
            }
        )
    finally:
        os.environ.pop("MOATFORGE_API_KEYS", None)
    serve.run(app, name="moatforge-prom", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def _traffic(base: str) -> dict:
    url = f"{base}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {KEY}"}

    def chat(i: int, stream: bool = False) -> int:
        body = {
            "model": "tiny-prom",
            "messages": [{"role": "user", "content": f"Say something about invoice {i}."}],
            "max_tokens": 12,
            "temperature": 0,
            "stream": stream,
        }
        r = requests.post(url, json=body, headers=auth, timeout=120, stream=stream)
        if stream:
            for _ in r.iter_lines():
                pass
        return r.status_code

    # A first request creates the series; Prometheus' rate() counts only increases it has seen, so the rest
    # come after the next scrapes, as live traffic would.
    codes = [chat(0)]
    time.sleep(3)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes += list(pool.map(chat, range(1, 7)))
    codes.append(chat(99, stream=True))
    codes.append(requests.post(url, json={}, timeout=30).status_code)  # no key: 401
    codes.append(requests.post(url, data=b"{", headers=auth, timeout=30).status_code)  # malformed: 400
    return {"codes": codes}


@pytest.fixture(scope="module")
def workload(ray_cluster, prometheus, tiny_model_dir, tmp_path_factory):
    from ray import serve

    from moatforge.train.run import run_training

    tmp = tmp_path_factory.mktemp("prom-work")
    start = time.time()
    manifest = _curate(tmp)
    train = write_rows(tmp / "train.jsonl", sample_rows(24))
    cfg = tiny_config(
        tmp,
        tiny_model_dir,
        train,
        "prom-train",
        "train.zero_stage=1",
        "train.max_steps=4",
        "train.checkpoint_every_steps=2",
        f"cost.prices.cpu_core={CPU_PRICE}",
        "cost.budget_usd=50",
    )
    summary = run_training(cfg, printer=lambda *_: None)
    assert summary["status"] == "finished"
    deploy_start = time.time()
    try:
        base = _serve(tiny_model_dir)
        deployed = time.time()
        traffic = _traffic(base)
        assert traffic["codes"].count(200) == 8 and 401 in traffic["codes"] and 400 in traffic["codes"]
        # Ray exports every second and Prometheus scrapes every second: wait until the last requests are in.
        _wait(
            lambda: prometheus.value(f"sum(ray_moatforge_serve_requests_total{SERVED})") == len(traffic["codes"]),
            30,
            "the serve request counters",
        )
        time.sleep(3)  # a few more scrapes of the live gauges
        yield {
            "start": start,
            "end": time.time(),
            "manifest": manifest,
            "summary": summary,
            "metrics": read_jsonl(Path(summary["run_dir"]) / "metrics.jsonl"),
            "deploy_start": deploy_start,
            "deployed": deployed,
            "traffic": traffic,
            "cfg": cfg,
        }
    finally:
        # Also when the workload fails: a left-over app holds route "/" for every later module.
        with contextlib.suppress(Exception):
            serve.delete("moatforge-prom")
        serve.shutdown()


def _dashboard_exprs() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(GRAFANA_DIR.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                out.append((path.name, panel["title"], expr))
    return out


def split_comparison(expr: str) -> tuple[str, str, str]:
    """``lhs OP rhs`` at the top level of a PromQL expression (outside brackets, braces and strings)."""
    depth, quote, i = 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and c in "<>=!":
            op = expr[i : i + 2] if expr[i : i + 2] in (">=", "<=", "==", "!=") else c
            return expr[:i].strip(), op, expr[i + len(op) :].strip()
        i += 1
    raise AssertionError(f"no comparison in {expr!r}")


def test_split_comparison():
    assert split_comparison('sum(x{a!="b"}) > 0.8 * max(y)') == ('sum(x{a!="b"})', ">", "0.8 * max(y)")
    assert split_comparison("time() - max by (run) (t) >= 900") == ("time() - max by (run) (t)", ">=", "900")


def test_every_dashboard_expression_returns_data(prometheus, workload):
    exprs = _dashboard_exprs()
    assert len(exprs) > 30
    empty = [
        (name, title, expr)
        for name, title, expr in exprs
        if not prometheus.finite(expr, workload["start"], workload["end"])
    ]
    assert not empty, "panels without data:\n" + "\n".join(map(str, empty))


def test_dashboard_variables_have_values(prometheus, workload):
    for path in sorted(GRAFANA_DIR.glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] != "query":
                continue
            metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"]).groups()
            assert prometheus.label_values(label, metric), (path.name, var["name"])


def test_every_alert_expression_returns_data(prometheus, workload):
    groups = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 6
    for rule in rules:
        lhs, _, rhs = split_comparison(rule["expr"])
        for side in (lhs, rhs) if "ray_" in rhs else (lhs,):
            assert prometheus.finite(side, workload["start"], workload["end"]), (rule["alert"], side)
    # Prometheus loaded the very same file and evaluates it.
    loaded = prometheus._get("/api/v1/rules")["groups"]
    assert sorted(r["name"] for g in loaded for r in g["rules"]) == sorted(r["alert"] for r in rules)
    assert all(r["health"] == "ok" for g in loaded for r in g["rules"]), loaded


def test_training_cost_in_prometheus_matches_the_price_table(prometheus, workload):
    run = '{run="prom-train"}'
    w = workload
    last = w["metrics"][-1]
    cost = max(prometheus.finite(f"max(ray_moatforge_train_cost_usd{run})", w["start"], w["end"]))
    assert cost == pytest.approx(last["cost_usd"], rel=1e-6)  # the same number the run wrote to metrics.jsonl
    workers, cpus = w["cfg"].cluster.num_workers, w["cfg"].cluster.cpus_per_worker
    # Core-seconds held, times the configured price: exactly what the cost gauge says.
    core_s = prometheus.value('sum(ray_moatforge_train_resource_seconds_total{run="prom-train", resource="cpu_core"})')
    assert core_s * CPU_PRICE / 3600 == pytest.approx(cost, rel=1e-6)
    # ... and that is workers x cores x price x wall hours: between the loop's elapsed time and the whole run's.
    rate = workers * cpus * CPU_PRICE / 3600
    assert rate * last["elapsed_s"] <= cost <= rate * w["summary"]["wall_time_s"]
    assert prometheus.value(f"sum(ray_moatforge_train_steps_total{run})") == 4
    tokens = prometheus.value(f"sum(ray_moatforge_train_tokens_total{run})")
    assert tokens == sum(m["tokens"] for m in w["metrics"])
    per_1m = prometheus.last(f"max(ray_moatforge_train_usd_per_1m_tokens{run})", w["start"], w["end"])
    assert per_1m == pytest.approx(cost / tokens * 1e6, rel=1e-6)
    budget = max(prometheus.finite(f"max(ray_moatforge_train_budget_usd{run})", w["start"], w["end"]))
    assert budget == 50


def test_serving_cost_in_prometheus_matches_the_price_table(prometheus, workload):
    w = workload
    per_hour = {
        r["metric"]["deployment"]: float(r["value"][1])
        for r in prometheus.instant(f"sum by (deployment) (ray_moatforge_serve_replica_cost_usd_per_hour{SERVED})")
    }
    price = DEFAULT_PRICES["cpu_core"]
    assert per_hour == pytest.approx({"LLMServer": 1 * price, "OpenAIIngress": 0.5 * price})
    accrued = prometheus.value(f"sum(ray_moatforge_serve_cost_usd_total{SERVED})")
    now = time.time()
    # Accrued per second while the replicas are up: between (since ready) and (since the deploy call).
    total_rate = sum(per_hour.values()) / 3600
    assert total_rate * (w["end"] - w["deployed"] - 3) <= accrued <= total_rate * (now - w["deploy_start"])
    generated = prometheus.value(f"sum(ray_moatforge_serve_generated_tokens_total{SERVED})")
    assert 8 <= generated <= 8 * 12
    engine_cost = prometheus.value('sum(ray_moatforge_serve_cost_usd_total{model="tiny-prom", deployment="LLMServer"})')
    gauge = prometheus.value(f"max(ray_moatforge_serve_usd_per_1m_generated_tokens{SERVED})")
    assert gauge == pytest.approx(engine_cost / generated * 1e6, rel=0.2)
    codes = {
        r["metric"]["code"]: float(r["value"][1])
        for r in prometheus.instant(f"sum by (code) (ray_moatforge_serve_requests_total{SERVED})")
    }
    assert codes == {"200": 8, "401": 1, "400": 1}


def test_curation_counts_in_prometheus_match_the_manifest(prometheus, workload):
    m = workload["manifest"]
    run = '{run="prom-curate"}'
    assert prometheus.value(f"sum(ray_moatforge_curate_rows_read_total{run})") == m["rows_read"]
    assert prometheus.value(f"sum(ray_moatforge_curate_rows_kept_total{run})") == m["rows_kept"]
    rejected = {
        (r["metric"]["step"], r["metric"]["reason"]): float(r["value"][1])
        for r in prometheus.instant(f"sum by (step, reason) (ray_moatforge_curate_rows_rejected_total{run})")
    }
    assert rejected == {(s, r): n for s, reasons in m["rejected"].items() for r, n in reasons.items()}
    assert rejected[("exact_dedup", "exact_duplicate")] == 3
    assert sum(rejected.values()) == m["rows_rejected"] >= 4
    redactions = {
        r["metric"]["reason"]: float(r["value"][1])
        for r in prometheus.instant(f"sum by (reason) (ray_moatforge_curate_redactions_total{run})")
    }
    assert redactions == m["redactions"] and redactions
