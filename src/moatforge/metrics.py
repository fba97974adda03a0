"""Metric names, the price table and the cost arithmetic, in one place; stages only record events.

Inside Ray (training workers, Serve replicas) metrics go through ``ray.util.metrics``: each node's metrics
agent exports them and Prometheus finds the agents through the service-discovery file Ray writes. Ray puts
its namespace in front (``ray_``) and Prometheus counters end in ``_total``; ``exported_name`` gives the name
to use in PromQL. Labels are bounded: run, stage, model, deployment — never a request or a row.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# USD per hour for one accelerator, and per CPU core ("cpu_core"). On-demand list prices of large clouds
# (late 2026), rounded; override with cost.prices.<TYPE>=... for your contract.
DEFAULT_PRICES: dict[str, float] = {
    "H200": 3.80,
    "H100": 2.90,
    "A100": 1.60,
    "L40S": 1.10,
    "A10G": 1.00,
    "L4": 0.80,
    "T4": 0.35,
    "cpu_core": 0.04,
}

# Dense bf16 peak FLOP/s per accelerator (vendor data sheets, without sparsity): the MFU denominator.
PEAK_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
    "T4": 65e12,
}


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | gauge | histogram
    unit: str
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()

    @property
    def exported_name(self) -> str:
        """The name Prometheus stores: Ray's namespace first, ``_total`` after counters."""
        return f"ray_{self.name}" + ("_total" if self.kind == "counter" else "")


TRAIN_LABELS = ("run", "stage", "model")
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

TRAIN_METRICS = [
    MetricSpec("moatforge_train_tokens", "counter", "tokens", TRAIN_LABELS, "Tokens processed by optimizer steps"),
    MetricSpec("moatforge_train_samples", "counter", "rows", TRAIN_LABELS, "Training rows processed"),
    MetricSpec("moatforge_train_steps", "counter", "steps", TRAIN_LABELS, "Optimizer steps taken"),
    MetricSpec(
        "moatforge_train_step_seconds", "histogram", "seconds", TRAIN_LABELS, "Wall time of one step", STEP_BUCKETS
    ),
    MetricSpec("moatforge_train_tokens_per_second", "gauge", "tokens/s", TRAIN_LABELS, "Throughput of the last step"),
    MetricSpec("moatforge_train_mfu", "gauge", "ratio", TRAIN_LABELS, "Model FLOPs utilisation of the last step"),
    MetricSpec(
        "moatforge_train_resource_seconds",
        "counter",
        "seconds",
        (*TRAIN_LABELS, "resource"),
        "Resource-seconds held (resource = accelerator type or cpu_core)",
    ),
    MetricSpec("moatforge_train_cost_usd", "gauge", "USD", TRAIN_LABELS, "Cost of the run so far"),
    MetricSpec("moatforge_train_projected_cost_usd", "gauge", "USD", TRAIN_LABELS, "Cost at the last step, projected"),
    MetricSpec("moatforge_train_budget_usd", "gauge", "USD", TRAIN_LABELS, "cost.budget_usd (absent when unset)"),
    MetricSpec("moatforge_train_usd_per_1m_tokens", "gauge", "USD", TRAIN_LABELS, "Cost per million trained tokens"),
    MetricSpec("moatforge_train_goodput", "gauge", "ratio", TRAIN_LABELS, "Productive step time over wall time"),
    MetricSpec("moatforge_train_restarts", "counter", "restarts", TRAIN_LABELS, "Worker group restarts"),
    MetricSpec(
        "moatforge_train_checkpoint_seconds",
        "histogram",
        "seconds",
        TRAIN_LABELS,
        "Time to save and report a checkpoint",
        STEP_BUCKETS,
    ),
    MetricSpec("moatforge_train_loss", "gauge", "nats/token", TRAIN_LABELS, "Training loss of the last step"),
    MetricSpec(
        "moatforge_train_last_step_timestamp_seconds", "gauge", "unix s", TRAIN_LABELS, "When the last step ended"
    ),
]


SERVE_LABELS = ("deployment", "model")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

SERVE_METRICS = [
    MetricSpec(
        "moatforge_serve_requests",
        "counter",
        "requests",
        (*SERVE_LABELS, "code"),
        "HTTP responses of the OpenAI API, by status code (recorded by the ingress)",
    ),
    MetricSpec(
        "moatforge_serve_request_latency_seconds",
        "histogram",
        "seconds",
        SERVE_LABELS,
        "Request arrival at the ingress to the last byte of the response (streams included)",
        LATENCY_BUCKETS,
    ),
    MetricSpec(
        "moatforge_serve_time_to_first_token_seconds",
        "histogram",
        "seconds",
        SERVE_LABELS,
        "Request arrival at the model replica to its first generated token",
        LATENCY_BUCKETS,
    ),
    MetricSpec(
        "moatforge_serve_prompt_tokens", "counter", "tokens", SERVE_LABELS, "Prompt tokens of finished requests"
    ),
    MetricSpec(
        "moatforge_serve_generated_tokens", "counter", "tokens", SERVE_LABELS, "Tokens generated for finished requests"
    ),
    MetricSpec(
        "moatforge_serve_batch_size",
        "histogram",
        "requests",
        SERVE_LABELS,
        "Requests in the running batch at each decode step",
        BATCH_BUCKETS,
    ),
    MetricSpec("moatforge_serve_replicas", "gauge", "replicas", SERVE_LABELS, "1 per live replica; sum by deployment"),
    MetricSpec(
        "moatforge_serve_replica_cost_usd_per_hour",
        "gauge",
        "USD/hour",
        SERVE_LABELS,
        "Price of what one replica holds (its CPUs and accelerators); sum by deployment",
    ),
    MetricSpec("moatforge_serve_cost_usd", "counter", "USD", SERVE_LABELS, "Replica cost accrued while up"),
    MetricSpec(
        "moatforge_serve_usd_per_1m_generated_tokens",
        "gauge",
        "USD",
        SERVE_LABELS,
        "A model replica's accrued cost over the tokens it generated, per million",
    ),
]

CURATE_LABELS = ("run", "stage")

CURATE_METRICS = [
    MetricSpec("moatforge_curate_rows_read", "counter", "rows", CURATE_LABELS, "Rows read from the inputs"),
    MetricSpec("moatforge_curate_rows_kept", "counter", "rows", CURATE_LABELS, "Rows written to data/"),
    MetricSpec(
        "moatforge_curate_rows_rejected",
        "counter",
        "rows",
        (*CURATE_LABELS, "step", "reason"),
        "Rows dropped, by the step and reason that dropped them",
    ),
    MetricSpec("moatforge_curate_bytes_read", "counter", "bytes", CURATE_LABELS, "Bytes of the input files"),
    MetricSpec(
        "moatforge_curate_redactions",
        "counter",
        "placeholders",
        (*CURATE_LABELS, "step", "reason"),
        "PII replaced by a typed placeholder (reason = the type, e.g. EMAIL)",
    ),
    MetricSpec(
        "moatforge_curate_rows_per_second", "gauge", "rows/s", CURATE_LABELS, "Rows read over the run's wall time"
    ),
    MetricSpec(
        "moatforge_curate_step_seconds",
        "gauge",
        "seconds",
        (*CURATE_LABELS, "step"),
        "Time spent in each step during the last run (summed over workers for row steps)",
    ),
    MetricSpec(
        "moatforge_curate_last_run_timestamp_seconds", "gauge", "unix s", CURATE_LABELS, "When the last run finished"
    ),
]

ALL_METRICS = {"Training and distillation": TRAIN_METRICS, "Serving": SERVE_METRICS, "Curation": CURATE_METRICS}


def prices_with_defaults(prices: dict[str, float] | None) -> dict[str, float]:
    return {**DEFAULT_PRICES, **(prices or {})}


def detect_accelerator(use_gpu: bool) -> str:
    """The price-table key of this worker's accelerator, or ``cpu_core`` without one."""
    if not use_gpu:
        return "cpu_core"
    import torch

    name = torch.cuda.get_device_name().upper() if torch.cuda.is_available() else ""
    return next((key for key in PEAK_FLOPS if key in name), name or "unknown_gpu")


def train_flops_per_token(params: int, trainable: int) -> float:
    """FLOPs per trained token: 2N forward, 2N backward through activations, 2 per trainable weight gradient.

    This is the 6N rule for a full fine-tune and ~4N for LoRA; attention's sequence-length term is left out.
    """
    return 4.0 * params + 2.0 * trainable


@dataclass(frozen=True)
class Resources:
    """What a stage holds while it runs: ``workers`` × (one accelerator or none, ``cpus`` cores)."""

    workers: int
    cpus_per_worker: float
    accelerator: str  # price key; "cpu_core" when there is none

    def seconds(self, wall_s: float) -> dict[str, float]:
        held = {"cpu_core": self.workers * self.cpus_per_worker * wall_s}
        if self.accelerator != "cpu_core":
            held[self.accelerator] = self.workers * wall_s
        return held

    def cost_usd(self, wall_s: float, prices: dict[str, float]) -> float:
        return sum(seconds / 3600.0 * prices.get(kind, 0.0) for kind, seconds in self.seconds(wall_s).items())

    def peak_flops(self, cpu_peak_flops_per_core: float) -> float:
        if self.accelerator == "cpu_core":
            return self.workers * self.cpus_per_worker * cpu_peak_flops_per_core
        return self.workers * PEAK_FLOPS.get(self.accelerator, 0.0)


def usd_per_1m_tokens(cost_usd: float, tokens: int) -> float | None:
    return cost_usd / tokens * 1e6 if tokens else None


def projected_cost(cost_so_far: float, steps_done: int, total_steps: int) -> float:
    """The whole run's cost if the remaining steps cost what the done ones did on average."""
    if steps_done <= 0:
        return cost_so_far
    return cost_so_far * total_steps / steps_done


class RayMetrics:
    """``ray.util.metrics`` objects for a list of specs, created once per process with default labels."""

    def __init__(self, specs: list[MetricSpec], labels: dict[str, str]):
        from ray.util import metrics as m

        self.objects = {}
        for spec in specs:
            if spec.kind == "counter":
                obj = m.Counter(spec.name, description=spec.help, tag_keys=spec.labels)
            elif spec.kind == "gauge":
                obj = m.Gauge(spec.name, description=spec.help, tag_keys=spec.labels)
            else:
                obj = m.Histogram(spec.name, description=spec.help, boundaries=list(spec.buckets), tag_keys=spec.labels)
            obj.set_default_tags({k: v for k, v in labels.items() if k in spec.labels})
            self.objects[spec.name] = obj

    def inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        if value > 0:
            self.objects[name].inc(value, tags=tags or None)

    def set(self, name: str, value: float | None, **tags: str) -> None:
        if value is not None:
            self.objects[name].set(value, tags=tags or None)

    def observe(self, name: str, value: float) -> None:
        self.objects[name].observe(value)

    def keep(self, name: str, value: float, **tags: str) -> None:
        """Set a gauge and re-set it for as long as this process lives (see ``_GaugeKeeper``)."""
        self.set(name, value, **tags)
        _KEEPER.keep(self, name, value, tags)


class _GaugeKeeper:
    """Re-sets "last run" gauges every second from a daemon thread.

    Ray's metrics agent evicts a gauge series two export intervals after its emitter last set it, so a value
    set once at the end of a stage (rows/s of the last curate run, its timestamp) would be scraped only by
    luck. A driver that runs several stages keeps exporting them until it exits; a CLI run waits for one
    export before exiting (``wait_for_metrics_export``).
    """

    def __init__(self, interval_s: float = 1.0):
        import threading

        self.interval_s = interval_s
        self._values: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def keep(self, metrics: RayMetrics, name: str, value: float, tags: dict[str, str]) -> None:
        import threading

        with self._lock:
            self._values[(id(metrics), name, tuple(sorted(tags.items())))] = (metrics, name, value, tags)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="moatforge-gauges", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            with self._lock:
                values = list(self._values.values())
            for metrics, name, value, tags in values:
                try:
                    metrics.set(name, value, **tags)
                except Exception:  # noqa: BLE001 - Ray shut down under us: nothing left to export to
                    return


_KEEPER = _GaugeKeeper()


class TrainRecorder:
    """Turns the training loop's per-step numbers into metrics, cost and the budget decision (rank 0)."""

    def __init__(
        self,
        labels: dict[str, str],
        resources: Resources,
        prices: dict[str, float],
        flops_per_token: float,
        cpu_peak_flops_per_core: float,
        budget_usd: float | None,
        enabled: bool = True,
    ):
        self.resources, self.prices, self.budget = resources, prices, budget_usd
        self.flops_per_token = flops_per_token
        self.peak = resources.peak_flops(cpu_peak_flops_per_core)
        self.metrics = RayMetrics(TRAIN_METRICS, labels) if enabled else None
        self.last_wall = None
        if self.metrics is not None and budget_usd is not None:
            self.metrics.set("moatforge_train_budget_usd", budget_usd)

    def step(
        self,
        *,
        tokens: int,
        samples: int,
        step_time: float,
        loss: float,
        wall_s: float,
        productive_s: float,
        cost_before: float,
        steps_done: int,
        total_steps: int,
        tokens_total: int,
    ) -> dict:
        """Record one step; returns the cost fields that go into metrics.jsonl.

        ``wall_s`` is this invocation's time so far (restarts and checkpoints included), ``cost_before`` what
        earlier invocations of the same run cost.
        """
        cost = cost_before + self.resources.cost_usd(wall_s, self.prices)
        tps = tokens / step_time if step_time > 0 else 0.0
        out = {
            "cost_usd": cost,
            "projected_cost_usd": projected_cost(cost, steps_done, total_steps),
            "usd_per_1m_tokens": usd_per_1m_tokens(cost, tokens_total),
            "mfu": self.flops_per_token * tps / self.peak if self.peak else None,
            "goodput": min(1.0, productive_s / wall_s) if wall_s > 0 else None,
        }
        if self.metrics is not None:
            m = self.metrics
            m.inc("moatforge_train_tokens", tokens)
            m.inc("moatforge_train_samples", samples)
            m.inc("moatforge_train_steps", 1)
            m.observe("moatforge_train_step_seconds", step_time)
            m.set("moatforge_train_tokens_per_second", tps)
            m.set("moatforge_train_loss", loss)
            m.set("moatforge_train_last_step_timestamp_seconds", time.time())
            held_since = wall_s - (self.last_wall if self.last_wall is not None else 0.0)
            for resource, seconds in self.resources.seconds(max(held_since, 0.0)).items():
                m.inc("moatforge_train_resource_seconds", seconds, resource=resource)
            for key in ("cost_usd", "projected_cost_usd", "usd_per_1m_tokens", "mfu", "goodput"):
                m.set(f"moatforge_train_{key}", out[key])
        self.last_wall = wall_s
        return out

    def over_budget(self, projected_usd: float) -> bool:
        return self.budget is not None and projected_usd > self.budget

    def restart(self) -> None:
        if self.metrics is not None:
            self.metrics.inc("moatforge_train_restarts", 1)

    def checkpoint(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe("moatforge_train_checkpoint_seconds", seconds)


def serve_cost_per_hour(num_cpus: float, num_gpus: float, accelerator: str, prices: dict[str, float]) -> float:
    """USD per hour of one replica: its CPU cores and (fractions of) accelerators at the price table's rates."""
    cost = num_cpus * prices.get("cpu_core", 0.0)
    if num_gpus and accelerator != "cpu_core":
        cost += num_gpus * prices.get(accelerator, 0.0)
    return cost


class ServeRecorder:
    """Per-replica serving metrics: requests and latency (ingress), tokens, TTFT and batches (model replica),
    and the replica's cost, accrued by a daemon thread every ``interval_s`` so it grows while the replica idles.
    """

    def __init__(
        self,
        deployment: str,
        model: str,
        cost_per_hour: float,
        interval_s: float = 1.0,
        enabled: bool = True,
    ):
        import threading

        self.cost_per_hour = cost_per_hour
        self.interval_s = interval_s
        self.cost = 0.0
        self.generated = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.metrics = RayMetrics(SERVE_METRICS, {"deployment": deployment, "model": model}) if enabled else None
        self._set_static_gauges()
        self._thread = threading.Thread(target=self._accrue, name="moatforge-serve-cost", daemon=True)
        self._thread.start()

    def _set_static_gauges(self) -> None:
        # Re-set on every tick: Ray's exporter drops a gauge series that was set once and never again.
        if self.metrics is not None:
            self.metrics.set("moatforge_serve_replicas", 1)
            self.metrics.set("moatforge_serve_replica_cost_usd_per_hour", self.cost_per_hour)

    def _accrue(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            self.add_time(now - last)
            last = now

    def add_time(self, seconds: float) -> None:
        usd = self.cost_per_hour * seconds / 3600.0
        with self._lock:
            self.cost += usd
            per_1m = usd_per_1m_tokens(self.cost, self.generated)
        self._set_static_gauges()
        if self.metrics is not None:
            self.metrics.inc("moatforge_serve_cost_usd", usd)
            self.metrics.set("moatforge_serve_usd_per_1m_generated_tokens", per_1m)

    def request(self, code: int, latency_s: float) -> None:
        if self.metrics is not None:
            self.metrics.inc("moatforge_serve_requests", 1, code=str(code))
            self.metrics.observe("moatforge_serve_request_latency_seconds", latency_s)

    def finished(self, prompt_tokens: int, generated_tokens: int, ttft_s: float | None) -> None:
        with self._lock:
            self.generated += generated_tokens
        if self.metrics is not None:
            self.metrics.inc("moatforge_serve_prompt_tokens", prompt_tokens)
            self.metrics.inc("moatforge_serve_generated_tokens", generated_tokens)
            if ttft_s is not None:
                self.metrics.observe("moatforge_serve_time_to_first_token_seconds", ttft_s)

    def batch(self, size: int) -> None:
        if self.metrics is not None:
            self.metrics.observe("moatforge_serve_batch_size", size)

    def close(self) -> None:
        self._stop.set()


def record_curate(manifest: dict, run: str, enabled: bool = True) -> dict[str, float]:
    """Curation metrics from a finished run's manifest (rows read = kept + rejected), recorded by the driver.

    Returns the values recorded, keyed by metric name (and step/reason), for logging and tests.
    """
    labels = {"run": run, "stage": "curate"}
    wall = manifest.get("wall_time_s") or 0.0
    values: dict[str, float] = {
        "moatforge_curate_rows_read": manifest["rows_read"],
        "moatforge_curate_rows_kept": manifest["rows_kept"],
        "moatforge_curate_bytes_read": sum(i.get("size", 0) for i in manifest.get("inputs", [])),
        "moatforge_curate_rows_per_second": manifest["rows_read"] / wall if wall > 0 else 0.0,
        "moatforge_curate_last_run_timestamp_seconds": time.time(),
    }
    rejected = {(s, r): n for s, reasons in manifest["rejected"].items() for r, n in reasons.items()}
    redactions = {("pii", kind): n for kind, n in manifest.get("redactions", {}).items()}
    steps = dict(manifest.get("seconds_per_step", {}))
    if not enabled:
        return values
    m = RayMetrics(CURATE_METRICS, labels)
    for name, value in values.items():
        (m.inc if name.endswith(("_read", "_kept")) else m.keep)(name, value)
    for (step, reason), n in rejected.items():
        m.inc("moatforge_curate_rows_rejected", n, step=step, reason=reason)
    for (step, reason), n in redactions.items():
        m.inc("moatforge_curate_redactions", n, step=step, reason=reason)
    for step, seconds in steps.items():
        m.keep("moatforge_curate_step_seconds", seconds, step=step)
    return values


def metrics_flush_seconds(address: str | None) -> float:
    """One Ray metrics report tick plus a margin when the cluster outlives this process, else 0."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        return 0.0
    interval_ms = os.environ.get("RAY_metrics_report_interval_ms", "10000")  # noqa: SIM112 - Ray's own name
    return int(interval_ms) / 1000 + 1.0


def wait_for_metrics_export(address: str | None, printer=print) -> float:
    """Hold a driver that joined a long-lived cluster until its metrics are exported; returns seconds waited.

    ``ray.util.metrics`` values recorded in a driver reach the node's metrics agent on the driver's next report
    tick (``RAY_metrics_report_interval_ms``, 10 s by default); a CLI run that exits sooner loses them. A local
    Ray started by this process dies with it, so there is nothing to wait for then.
    """
    seconds = metrics_flush_seconds(address)
    if not seconds:
        return 0.0
    printer(f"[metrics] waiting {seconds:.0f}s for Ray's metrics export of this run")
    time.sleep(seconds)
    return seconds


def metrics_doc() -> str:
    """docs/metrics.md, generated from the specs (``python -m moatforge.metrics > docs/metrics.md``)."""
    out = [
        "# Metrics",
        "",
        "Generated from `src/moatforge/metrics.py` by `python -m moatforge.metrics > docs/metrics.md`; a unit test",
        "keeps this file in sync. Every metric is recorded with `ray.util.metrics` inside Ray (training workers,",
        "Serve replicas, the curate driver) and exported by each node's Ray metrics agent; Prometheus finds the",
        "agents through the service-discovery file Ray writes (`cluster/prometheus/prometheus.yml`).",
        "",
        "Names below are the ones Prometheus stores: Ray puts `ray_` in front, counters end in `_total`, and",
        "histograms are stored as `_bucket` (with `le`), `_sum` and `_count`. Ray adds its own labels to every",
        "series (`SessionName`, `NodeAddress`, `WorkerId`, `Component`, `Version`): aggregate with",
        "`sum by (...)` over the labels listed here. Labels are bounded: `run`, `stage`, `model` and `deployment`",
        "name runs and deployments; `code`, `step`, `reason` and `resource` take values from fixed sets (HTTP",
        "status codes, curate step names and reasons, price-table keys). Never a request or a row.",
        "",
        "Gauges from a process that has ended age out of Ray's export within two report intervals",
        "(`RAY_metrics_report_interval_ms`, 10 s by default); counters and histograms stay.",
        "",
    ]
    for title, specs in ALL_METRICS.items():
        out += [f"## {title}", "", "| Exported name | Type | Unit | Labels | Description |", "|---|---|---|---|---|"]
        for spec in specs:
            labels = ", ".join(f"`{label}`" for label in spec.labels)
            desc = spec.help
            if spec.buckets:
                desc += f" (buckets: {', '.join(f'{b:g}' for b in spec.buckets)})"
            out.append(f"| `{spec.exported_name}` | {spec.kind} | {spec.unit} | {labels} | {desc} |")
        out.append("")
    out += [
        "## Cost model",
        "",
        "USD per hour from `cost.prices` (defaults below, override with `cost.prices.<KEY>=...`; for serving,",
        "`serve.prices`), applied to what a stage holds: training bills `cluster.num_workers` x",
        "(`cluster.cpus_per_worker` cores + one accelerator when `cluster.use_gpu`) for the run's wall time, restarts",
        "and checkpoints included; a Serve replica bills its `num_cpus` and `num_gpus` while it is up.",
        "",
        "| Price key | USD per hour |",
        "|---|---|",
        *(f"| `{key}` | {price:.2f} |" for key, price in DEFAULT_PRICES.items()),
        "",
        "Peak FLOP/s for MFU (dense bf16): "
        + ", ".join(f"{key} {flops / 1e12:g} TFLOP/s" for key, flops in PEAK_FLOPS.items())
        + "; CPUs: `cost.cpu_peak_flops_per_core` per core.",
        "",
        "## Ray's own series used by the dashboards and alerts",
        "",
        "| Exported name | Type | Labels | Meaning |",
        "|---|---|---|---|",
        "| `ray_serve_deployment_replica_healthy` | gauge | `application`, `deployment` | Healthy replicas"
        " (from the Serve controller) |",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(metrics_doc(), end="")
