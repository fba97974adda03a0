"""One local Ray cluster for the whole integration suite; restarting Ray per test would dominate the run time."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    # More logical CPUs than cores: Train workers, Ray Data actors and the split coordinator must co-exist.
    ray.init(num_cpus=6, include_dashboard=False, configure_logging=False, log_to_driver=True)
    yield ray
    ray.shutdown()
