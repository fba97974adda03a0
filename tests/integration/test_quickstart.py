"""The demo's whole flow (sample data → teacher → distilled student → eval → serve) with a tiny model.

`make demo` runs the same function with the real SmolLM2; this keeps every stage's wiring honest in CI.
"""

from __future__ import annotations

import json

import pytest

from moatforge.quickstart import EVAL_ROWS, quickstart_config, results_table, run_quickstart

pytestmark = pytest.mark.slow


def test_quickstart_flow_with_a_tiny_model(ray_cluster, tiny_model_dir, tmp_path):
    cfg = quickstart_config(
        [f"run.storage_path={tmp_path}", f"model.name_or_path={tiny_model_dir}", "train.max_steps=2"]
    )
    lines: list[str] = []
    results = run_quickstart(
        cfg, printer=lines.append, student_overrides=["distill.student=prune:1", "train.max_steps=2"]
    )
    on_disk = json.loads((tmp_path / "quickstart" / "results.json").read_text())
    for name in ("base", "teacher", "student"):
        for key in ("tool_call_accuracy", "unparseable_rate", "loss", "latency_s_mean", "tokens_per_s", "n", "params"):
            assert key in on_disk[name], (name, key)
        assert on_disk[name]["n"] == EVAL_ROWS
    assert on_disk["student"]["params"] < on_disk["teacher"]["params"]
    assert on_disk["teacher"]["model_path"].endswith("quickstart-teacher/final/model")
    assert on_disk["student"]["model_path"].endswith("quickstart-student/final/model")
    assert len(results["served"]) == 3 and all(a["completion_tokens"] > 0 for a in results["served"])
    assert any("served app shut down" in line for line in lines)
    manifest = json.loads((tmp_path / "quickstart" / "curated" / "manifest.json").read_text())
    assert manifest["rows_kept"] < manifest["rows_read"]  # the planted dirt was removed before training
    assert any(line.startswith("[curate] read") for line in lines)
    assert any(line.startswith("report: ") for line in lines) and (tmp_path / "quickstart" / "report.md").exists()
    table = results_table(results)
    assert all(name in table for name in ("base", "teacher", "student"))
    assert [line.split("] ", 1)[1][:3] for line in lines if line.startswith("\n== [")][-1] == "8/8"
