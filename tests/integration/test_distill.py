"""``moatforge distill`` end to end on the local Ray cluster: offline and online teachers, resume, run dir."""

from __future__ import annotations

import json

import pytest
import torch

from moatforge.distill.run import run_distill
from moatforge.models import create_tiny_model, load_model

from .helpers import read_jsonl, sample_rows, tiny_config, write_rows


@pytest.fixture(scope="module")
def setup(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    teacher = create_tiny_model(tmp / "teacher", hidden_size=32, layers=4, seed=3)
    model = load_model(teacher)
    with torch.no_grad():
        model.model.norm.weight.mul_(40.0)  # peaked outputs, as a trained teacher has
    model.save_pretrained(teacher)
    train = write_rows(tmp / "train.jsonl", sample_rows(12))
    evaluation = write_rows(tmp / "eval.jsonl", sample_rows(4, seed=9))
    return tmp, teacher, train, evaluation


def distill_config(setup, name: str, *overrides: str):
    tmp, teacher, train, evaluation = setup
    return tiny_config(
        tmp,
        teacher,
        train,
        name,
        f"data.eval={evaluation}",
        f"distill.teacher={teacher}",
        "distill.top_k=8",
        "distill.temperature=2.0",
        "train.checkpoint_every_steps=2",
        *overrides,
    )


def test_offline_distillation_writes_the_run_directory_and_resumes_without_a_second_teacher_pass(setup):
    tmp = setup[0]
    common = ("distill.mode=offline", "distill.student=prune:2", "distill.prune_method=even", "train.zero_stage=2")
    first = run_distill(distill_config(setup, "kd-offline", *common, "train.max_steps=2"))
    run_dir = tmp / "runs" / "kd-offline"
    assert first["status"] == "finished" and first["steps"] == 2 and first["stage"] == "distill"
    meta = json.loads((run_dir / "teacher_topk" / "_moatforge_teacher.json").read_text())
    assert meta["rows"] == 12 and meta["top_k"] == 8
    assert json.loads((run_dir / "student_init" / "moatforge_prune.json").read_text())["kept"] == [0, 3]

    lines: list[str] = []
    second = run_distill(distill_config(setup, "kd-offline", *common, "train.max_steps=4"), printer=lines.append)
    assert any("reusing the teacher's top-8 outputs" in line for line in lines), lines
    assert any("reusing the pruned student" in line for line in lines), lines
    assert second["steps"] == 4 and second["resumed_from_steps"] == [2]

    for name in ("config.yaml", "metrics.jsonl", "summary.json", "final/model/config.json"):
        assert (run_dir / name).exists(), name
    student = load_model(run_dir / "final" / "model")
    assert student.config.num_hidden_layers == 2
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        assert m["kd_loss"] > 0 and m["ce_loss"] > 0
        assert m["loss"] == pytest.approx(0.5 * m["kd_loss"] + 0.5 * m["ce_loss"], rel=1e-4)
    assert "eval_loss" in metrics[-1]


def test_online_distillation_under_zero3(setup):
    tmp = setup[0]
    summary = run_distill(
        distill_config(
            setup,
            "kd-online",
            "distill.mode=online",
            "distill.student=prune:2",
            "distill.loss=jsd",
            "distill.beta=0.3",
            "train.zero_stage=3",
            "train.max_steps=2",
        )
    )
    run_dir = tmp / "runs" / "kd-online"
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert not (run_dir / "teacher_topk").exists()  # online: no stored teacher outputs
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert all(m["kd_loss"] > 0 for m in metrics)
    assert load_model(run_dir / "final" / "model").config.num_hidden_layers == 2
