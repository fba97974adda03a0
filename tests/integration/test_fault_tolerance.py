"""SIGKILL a Ray Train worker mid-run: the run resumes from its last checkpoint and logs every step once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from moatforge.train.run import run_training

from .helpers import read_jsonl, sample_rows, tiny_config, write_rows

STEPS = 12
EVERY = 3


@pytest.mark.slow
def test_worker_killed_mid_run_resumes(ray_cluster, tiny_model_dir, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", sample_rows(16))
    cfg = tiny_config(
        tmp_path, tiny_model_dir, train, "ft", f"train.max_steps={STEPS}", f"train.checkpoint_every_steps={EVERY}"
    )
    run_dir = tmp_path / "runs" / "ft"
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=run_training(cfg)), daemon=True)
    thread.start()

    checkpoint_at_kill = None
    deadline = time.time() + 600
    while time.time() < deadline and thread.is_alive():
        # Kill only once Ray has registered a checkpoint: a report still in flight when its worker dies is
        # lost by design, and tiny steps are fast enough for the kill to land within that window.
        checkpoint_at_kill = _registered_checkpoint_step(run_dir)
        if checkpoint_at_kill is not None and checkpoint_at_kill < STEPS:
            pid = read_jsonl(run_dir / "attempts.jsonl")[-1]["pid"]
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    assert checkpoint_at_kill is not None and checkpoint_at_kill < STEPS, "never caught the run mid-way"
    thread.join(timeout=600)
    summary = outcome["summary"]

    assert summary["status"] == "finished"
    assert summary["restarts"] == 1
    (resumed,) = summary["resumed_from_steps"]
    # A later checkpoint may have been registered between reading the snapshot and the signal landing.
    assert resumed % EVERY == 0 and checkpoint_at_kill <= resumed < STEPS
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert json.loads((run_dir / "summary.json").read_text())["restarts"] == 1
    assert (run_dir / "final" / "model" / "config.json").exists()

    # The same command again finds the finished run and resumes from its final checkpoint: no step is redone.
    again = run_training(cfg)
    assert again["status"] == "finished" and again["resumed_from_steps"] == [STEPS]
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, STEPS + 1))


def _registered_checkpoint_step(run_dir) -> int | None:
    """The step of the newest checkpoint Ray Train's controller has registered (its snapshot file), if any."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    latest = snapshot.get("latest_checkpoint_result")
    return latest["metrics"]["step"] if latest else None
