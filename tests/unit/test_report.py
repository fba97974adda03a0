"""``moatforge report`` on synthetic run and quickstart folders: Markdown, real PNGs, the cost arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moatforge.cli import main
from moatforge.errors import MoatforgeError
from moatforge.report import cost_summary, model_rows, serving_usd_per_1m_tokens, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _run_dir(root: Path, name: str, cost_per_step: float = 0.001) -> Path:
    run = root / name
    run.mkdir(parents=True)
    lines = []
    for step in range(1, 9):
        m = {
            "step": step,
            "loss": 2.0 / step,
            "lr": 1e-3,
            "tokens": 500,
            "tokens_per_s": 100.0 + step,
            "elapsed_s": 10.0 * step,
            "cost_usd": cost_per_step * step,
            "projected_cost_usd": cost_per_step * 8,
            "usd_per_1m_tokens": cost_per_step * step / (500 * step) * 1e6,
            "goodput": 0.9,
            "mfu": 0.01,
        }
        if step % 4 == 0:
            m["eval_loss"] = 2.5 / step
        lines.append(json.dumps(m))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {
        "status": "finished",
        "run_name": name,
        "run_dir": str(run),
        "steps": 8,
        "total_steps": 8,
        "tokens": 4000,
        "wall_time_s": 85.0,
        "cost_usd": cost_per_step * 8,
        "usd_per_1m_tokens": cost_per_step * 8 / 4000 * 1e6,
        "goodput": 0.9,
        "mfu_mean": 0.01,
        "final_loss": 0.25,
        "final_eval_loss": 0.3125,
        "restarts": 0,
        "final_model": str(run / "final" / "model"),
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _pngs(md: Path) -> list[Path]:
    text = md.read_text()
    paths = [md.parent / part.split(")")[0] for part in text.split("](")[1:]]
    for p in paths:
        assert p.read_bytes()[:8] == PNG, p
    return paths


def test_run_report_has_the_summary_and_three_plots(tmp_path):
    run = _run_dir(tmp_path, "teacher-run")
    md = write_report(run)
    assert md == run / "report.md"
    text = md.read_text()
    assert "# moatforge run report" in text and "Run `teacher-run`" in text
    assert "| Cost | $0.0080 |" in text and "| Goodput | 90.0% |" in text
    assert sorted(p.name for p in _pngs(md)) == ["cost.png", "loss.png", "throughput.png"]


def test_cli_report_verb(tmp_path, capsys):
    run = _run_dir(tmp_path, "r")
    assert main(["report", str(run)]) == 0
    assert str(run / "report.md") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "results.json" in capsys.readouterr().err


def _results(root: Path) -> dict:
    teacher = _run_dir(root, "quickstart-teacher", 0.002)
    student = _run_dir(root, "quickstart-student", 0.001)

    def model(acc, tps, params, path):
        return {"tool_call_accuracy": acc, "tokens_per_s": tps, "params": params, "model_path": str(path), "n": 40}

    return {
        "base": model(0.15, 20.0, 134_515_008, "base"),
        "teacher": model(0.60, 20.0, 134_515_008, teacher / "final" / "model"),
        "student": model(0.55, 40.0, 70_000_000, student / "final" / "model"),
        "train_summary": json.loads((teacher / "summary.json").read_text()),
        "distill_summary": json.loads((student / "summary.json").read_text()),
    }


def test_serving_cost_per_million_tokens():
    # 2 cores at $0.04/h = $0.08/h; 20 tokens/s = 72,000 tokens/h -> $0.08 / 0.072 M tokens
    assert serving_usd_per_1m_tokens(20.0, 0.08) == pytest.approx(0.08 / 0.072)
    assert serving_usd_per_1m_tokens(0.0, 0.08) is None
    rows = {r["model"]: r for r in model_rows(_results_stub(), cores=2)}
    assert rows["student"]["serve_usd_per_1m_tokens"] == pytest.approx(0.08 / (40 * 3600) * 1e6)
    assert rows["teacher"]["train_cost_usd"] == 0.016 and rows["base"]["train_cost_usd"] is None


def _results_stub() -> dict:
    return {
        "base": {"tool_call_accuracy": 0.1, "tokens_per_s": 20.0, "params": 1},
        "teacher": {"tool_call_accuracy": 0.6, "tokens_per_s": 20.0, "params": 1},
        "student": {"tool_call_accuracy": 0.5, "tokens_per_s": 40.0, "params": 1},
        "train_summary": {"cost_usd": 0.016, "usd_per_1m_tokens": 4.0},
        "distill_summary": {"cost_usd": 0.008, "usd_per_1m_tokens": 2.0},
    }


def test_cost_summary_compares_teacher_and_student():
    text = cost_summary(_results_stub(), prices={"cpu_core": 0.05}, cores=4)
    assert "4 CPU cores at $0.200/hour" in text
    assert "teacher  fine-tuned for $0.0160 ($4.00 per 1M tokens)" in text
    assert "student  distilled for $0.0080" in text
    assert "student vs teacher: 2.00x cheaper per generated token, accuracy -10.0 points" in text


def test_quickstart_report_table_chart_and_run_sections(tmp_path):
    home = tmp_path / "quickstart"
    home.mkdir()
    (home / "results.json").write_text(json.dumps(_results(tmp_path)))
    md = write_report(home)
    text = md.read_text()
    assert md == home / "report.md"
    assert "| teacher | 60.0% |" in text and "| student | 55.0% |" in text
    assert "student vs teacher" in text
    names = sorted(p.name for p in _pngs(md))
    assert "accuracy_vs_cost.png" in names
    assert {"teacher_loss.png", "student_loss.png", "teacher_cost.png", "student_throughput.png"} <= set(names)
    assert "Run `quickstart-teacher`" in text and "Run `quickstart-student`" in text


def test_not_a_run_dir(tmp_path):
    with pytest.raises(MoatforgeError, match="not a directory"):
        write_report(tmp_path / "nope")
