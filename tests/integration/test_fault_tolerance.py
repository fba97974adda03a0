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

    killed_at = None
    deadline = time.time() + 600
    while time.time() < deadline and thread.is_alive():
        steps = (
            [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] if (run_dir / "metrics.jsonl").exists() else []
        )
        if steps and steps[-1] >= EVERY + 1:
            pid = read_jsonl(run_dir / "attempts.jsonl")[-1]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed_at = steps[-1]
            break
        time.sleep(0.2)
    assert killed_at is not None and killed_at < STEPS, "never caught the run mid-way"
    thread.join(timeout=600)
    summary = outcome["summary"]

    assert summary["status"] == "finished"
    assert summary["restarts"] == 1
    (resumed,) = summary["resumed_from_steps"]
    # metrics.jsonl is flushed at most once a second, so the worker may have got past killed_at (and saved
    # another checkpoint) before the signal landed: the last checkpoint known to exist is a lower bound.
    last_known_checkpoint = killed_at // EVERY * EVERY
    assert resumed % EVERY == 0 and last_known_checkpoint <= resumed < STEPS
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert json.loads((run_dir / "summary.json").read_text())["restarts"] == 1
    assert (run_dir / "final" / "model" / "config.json").exists()

    # The same command again finds the finished run and resumes from its final checkpoint: no step is redone.
    again = run_training(cfg)
    assert again["status"] == "finished" and again["resumed_from_steps"] == [STEPS]
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, STEPS + 1))
