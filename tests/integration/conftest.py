"""One local Ray cluster for the whole integration suite; restarting Ray per test would dominate the run time.

An S3 endpoint (moto's server on loopback) starts first, so every Ray worker inherits its address and
credentials: object-storage paths (``s3://``) go through the same pyarrow code as on a real cloud.
"""

from __future__ import annotations

import os

import pytest

# Modules that must see the session's Ray cluster before others fill it: every Ray Data dataset of the suite
# leaves per-dataset series in the metrics agent (~8 MB of text late in the suite, 1-11 s per scrape on two
# cores), and test_prometheus needs 1 s scrapes of that agent for rate() over a short workload.
RUN_FIRST = ("test_prometheus.py",)


def pytest_collection_modifyitems(config, items):
    first = [item for item in items if item.path.name in RUN_FIRST]
    if first:
        rest = [item for item in items if item.path.name not in RUN_FIRST]
        start = next((i for i, item in enumerate(rest) if "integration" in item.path.parts), len(rest))
        items[:] = rest[:start] + first + rest[start:]


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    import ray

    # More logical CPUs than cores: Train workers, Ray Data actors and the split coordinator must co-exist.
    # test_prometheus scrapes this cluster: the dashboard process is what writes Prometheus' service-discovery
    # file, and a 1 s metrics report interval (Ray's default is 10 s) lets a short run show up in 1 s scrapes.
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    ray.init(num_cpus=6, include_dashboard=True, configure_logging=False, log_to_driver=True)
    yield ray
    ray.shutdown()
