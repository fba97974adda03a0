"""``ray job submit`` against a real multi-node cluster started by ``cluster/local.sh``, torn down after.

The cluster is separate ``ray start`` processes (a head and two workers) with token authentication, so this
exercises what a laptop user does: upload the working directory, run ``jobs/finetune.py`` on the head, train
on workers of other nodes, and find a complete run directory on shared storage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"

pytestmark = pytest.mark.slow


def _sh(args, env, timeout, check=True):
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def local_cluster():
    # Short paths: Ray puts unix sockets (107-byte limit) under its session directory.
    state = Path(tempfile.mkdtemp(prefix="mf-cluster-", dir="/tmp"))
    ray_tmp = Path(tempfile.mkdtemp(prefix="mfray-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        MOATFORGE_LOCAL_CLUSTER_DIR=str(state),
        MOATFORGE_LOCAL_RAY_TMP=str(ray_tmp),
        MOATFORGE_LOCAL_WORKERS="2",
        MOATFORGE_LOCAL_HEAD_CPUS="0",
        MOATFORGE_LOCAL_WORKER_CPUS="3",
        MOATFORGE_LOCAL_GCS_PORT="6391",
        MOATFORGE_LOCAL_DASHBOARD_PORT="8276",
        RAY=str(RAY),
    )
    try:
        up = _sh(["bash", "cluster/local.sh", "up"], env, timeout=240)
        assert "1 head + 2 workers" in up.stdout, up.stdout
        yield env, state
    finally:
        _sh(["bash", "cluster/local.sh", "down"], env, timeout=120, check=False)
        pgids = [int(p.read_text()) for p in (state / "pids").glob("*")] if (state / "pids").exists() else []
        assert not pgids, f"local.sh down left process groups recorded: {pgids}"
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _no_processes_left(state: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(state) in line and "ps -eo" not in line]


def test_submit_finetune_to_local_multinode_cluster(local_cluster, tmp_path, tiny_model_dir, sample_paths):
    env, state = local_cluster
    dashboard = "http://127.0.0.1:8276"
    token = (state / "auth_token").read_text().strip()
    assert len(token) == 64 and (state / "auth_token").stat().st_mode & 0o077 == 0

    # Token auth is really on: the job API refuses a request without the token and one with a wrong token.
    for headers, code in (({}, 401), ({"Authorization": "Bearer " + "0" * 64}, 403)):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(f"{dashboard}/api/jobs/", headers=headers), timeout=10)
        assert err.value.code == code

    config = tmp_path / "tiny.yaml"
    run_root = tmp_path / "runs"
    config.write_text(
        yaml.safe_dump(
            {
                "run": {"name": "job-submit-tiny", "storage_path": str(run_root)},
                "cluster": {"num_workers": 2, "cpus_per_worker": 1},
                "model": {"name_or_path": str(tiny_model_dir)},
                "data": {"train": str(sample_paths["train"]), "max_seq_len": 1024, "shuffle": False},
                "train": {"max_steps": 3, "micro_batch_size": 2, "zero_stage": 2, "checkpoint_every_steps": 3},
            }
        )
    )
    # The repo's runtime env minus `pip`: no package index here, and the cluster runs this very virtualenv.
    runtime_env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    runtime_env.pop("pip")
    runtime_env_file = tmp_path / "runtime_env.yaml"
    runtime_env_file.write_text(yaml.safe_dump(runtime_env))

    client_env = dict(env, RAY_ADDRESS=dashboard, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(state / "auth_token"))
    proc = _sh(
        [
            str(RAY),
            "job",
            "submit",
            "--runtime-env",
            str(runtime_env_file),
            "--working-dir",
            ".",
            "--",
            "python",
            "jobs/finetune.py",
            "--config",
            str(config),
        ],
        client_env,
        timeout=420,
    )
    log = proc.stdout + proc.stderr
    assert "succeeded" in log, log[-4000:]
    # The entrypoint joined the 3-node cluster and imported the uploaded source, not the checkout's.
    joined = [line for line in log.splitlines() if "[job] joined the Ray cluster" in line]
    assert joined and ": 3 nodes, 6 CPUs" in joined[0], joined or log[-4000:]
    assert "runtime_resources" in joined[0] and str(ROOT / "src") not in joined[0], joined[0]

    run_dir = run_root / "job-submit-tiny"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "final/model/config.json"):
        assert (run_dir / name).is_file(), sorted(p.name for p in run_dir.iterdir())
    assert list((run_dir / "final" / "model").glob("*.safetensors"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 3, summary
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]

    # The job's status as the head records it, through the authenticated client.
    jobs = json.loads(_sh([str(RAY), "list", "jobs", "--format", "json"], client_env, timeout=60).stdout)
    assert [j["status"] for j in jobs] == ["SUCCEEDED"], jobs

    _sh(["bash", "cluster/local.sh", "down"], env, timeout=120)
    assert not _no_processes_left(state), _no_processes_left(state)
    assert not _no_processes_left(Path(env["MOATFORGE_LOCAL_RAY_TMP"]))
