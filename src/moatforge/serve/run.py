"""``moatforge serve``: deploy the app on a local or existing Ray cluster and keep it up until Ctrl-C.

The CLI accepts either a moatforge config (a ``serve:`` group) or the very Serve YAML that ``serve run`` takes
(``serve/student.yaml``), so one file describes the deployment for both tools; its ``args``, ``http_options`` and
``deployments`` entries become ``serve.*`` keys, and ``key=value`` overrides apply on top.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from moatforge.config import MoatforgeConfig, load_config
from moatforge.errors import MoatforgeError

_DEPLOYMENT_GROUPS = {"OpenAIIngress": "ingress", "LLMServer": "engine"}
_DEPLOYMENT_KEYS = {"max_ongoing_requests", "max_queued_requests", "num_replicas", "autoscaling_config"}
_DEPLOYMENT_KEYS |= {"ray_actor_options", "name"}


def load_serve_config(path: str | None, overrides: list[str]) -> MoatforgeConfig:
    if path is None:
        return load_config(None, overrides)
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) if p.is_file() else None
    except yaml.YAMLError:
        data = None  # load_config words YAML errors with line and column
    if not isinstance(data, dict) or "applications" not in data:
        return load_config(path, overrides)
    return load_config(None, serve_yaml_overrides(data, str(path)) + list(overrides))


def serve_yaml_overrides(data: dict, source: str) -> list[str]:
    """A Serve config file's first application as ``serve.*=value`` overrides (values as JSON, which YAML reads)."""
    apps = data.get("applications") or []
    if not apps or not isinstance(apps[0], dict):
        raise MoatforgeError(f"{source}: 'applications' must list at least one application")
    app = apps[0]
    out: list[str] = []

    def put(key: str, value) -> None:
        out.append(f"serve.{key}={json.dumps(value)}")

    http = data.get("http_options") or {}
    for key in ("host", "port"):
        if key in http:
            put(key, http[key])
    if "request_timeout_s" in http:
        put("request_timeout_s", http["request_timeout_s"])
    if "name" in app:
        put("app_name", app["name"])
    if "route_prefix" in app:
        put("route_prefix", app["route_prefix"])
    for key, value in (app.get("args") or {}).items():
        put(key, value)
    for dep in app.get("deployments") or []:
        group = _DEPLOYMENT_GROUPS.get(dep.get("name"))
        if group is None:
            raise MoatforgeError(
                f"{source}: unknown deployment {dep.get('name')!r}; this app has {sorted(_DEPLOYMENT_GROUPS)}"
            )
        unknown = set(dep) - _DEPLOYMENT_KEYS
        if unknown:
            raise MoatforgeError(
                f"{source}: deployment {dep['name']}: moatforge serve does not map {sorted(unknown)}; "
                f"supported: {sorted(_DEPLOYMENT_KEYS - {'name'})} (or use `serve run {source}`)"
            )
        for key in ("max_ongoing_requests", "max_queued_requests"):
            if key in dep:
                put(f"{group}.{key}", dep[key])
        if "num_replicas" in dep:
            put(f"{group}.min_replicas", dep["num_replicas"])
            put(f"{group}.max_replicas", dep["num_replicas"])
        for key in ("min_replicas", "max_replicas", "target_ongoing_requests"):
            if key in (dep.get("autoscaling_config") or {}):
                put(f"{group}.{key}", dep["autoscaling_config"][key])
        for key in ("num_cpus", "num_gpus"):
            if key in (dep.get("ray_actor_options") or {}):
                put(f"{group}.{key}", dep["ray_actor_options"][key])
    return out


def app_args(cfg: MoatforgeConfig) -> dict:
    """``build_app`` arguments: the run's price table (``cost.prices``, ``cost.accelerator``) prices the replicas
    too, so one table bills training and serving; ``serve.prices``/``serve.accelerator`` override it."""
    args = cfg.serve.model_dump(mode="json")
    args["prices"] = {**cfg.cost.prices, **cfg.serve.prices}
    args["accelerator"] = cfg.serve.accelerator or cfg.cost.accelerator
    return args


def deploy(cfg: MoatforgeConfig, printer=print) -> str:
    """Start Serve's HTTP proxy on ``serve.host:serve.port`` (if not running) and deploy; returns the base URL."""
    from ray import serve

    from moatforge.serve.app import build_app

    s = cfg.serve
    serve.start(http_options={"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s})
    app = build_app(app_args(cfg))
    t0 = time.time()
    serve.run(app, name=s.app_name, route_prefix=s.route_prefix)
    host, port = _proxy_address(s.host, s.port)
    url = f"http://{host}:{port}{s.route_prefix.rstrip('/')}/v1"
    printer(f"[serve] {s.model_name or s.model} ready in {time.time() - t0:.0f}s at {url}")
    return url


def _proxy_address(host: str, port: int) -> tuple[str, int]:
    """Where the HTTP proxy really listens: Serve keeps the first ``http_options`` if it was already running."""
    try:
        from ray.serve.context import _get_global_client

        config = _get_global_client().http_config
        host, port = config.host, config.port
    except Exception:  # a private API; the configured address is the right answer whenever Serve started here
        pass
    return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), port


def _stop_on_signals() -> None:
    """SIGTERM (``kill``, a container stop) ends the server the way Ctrl-C does, and so does SIGINT when the
    server was started in the background, where a non-interactive shell leaves SIGINT ignored."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def run_serve(cfg: MoatforgeConfig, printer=print) -> int:
    from ray import serve

    from moatforge.train.run import ensure_ray

    ensure_ray(cfg.cluster.address)
    deploy(cfg, printer)
    adapters = ", ".join(cfg.serve.adapters) or "none"
    printer(f"[serve] adapters: {adapters}; health: http://{cfg.serve.host}:{cfg.serve.port}/health; Ctrl-C stops")
    _stop_on_signals()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        printer("[serve] shutting down")
    finally:
        serve.delete(cfg.serve.app_name)
        serve.shutdown()
    return 0
