"""Bad input through the real console entry point: one clear line on stderr, exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moatforge", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_config_file(tmp_path):
    _assert_one_line_error(run_cli("train", "--config", str(tmp_path / "nope.yaml")), "does not exist")


def test_bad_yaml(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {lr: 1e-3\n")
    _assert_one_line_error(run_cli("train", "--config", str(cfg)), "invalid YAML", str(cfg))


def test_unknown_key_and_wrong_type():
    _assert_one_line_error(run_cli("train", "train.zero=2"), "unknown key 'train.zero'", "zero_stage")
    _assert_one_line_error(run_cli("train", "cluster.num_workers=two"), "cluster.num_workers")


def test_missing_data_and_model(tmp_path):
    _assert_one_line_error(run_cli("train"), "data.train is not set")
    _assert_one_line_error(run_cli("train", f"data.train={tmp_path / 'none.jsonl'}"), "does not exist")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    _assert_one_line_error(
        run_cli("train", f"data.train={data}", f"model.name_or_path={tmp_path / 'no-model'}"),
        "does not exist",
        "smollm2-135m-instruct",
    )


def test_model_dir_without_config(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    (tmp_path / "empty-model").mkdir()
    _assert_one_line_error(
        run_cli("train", f"data.train={data}", f"model.name_or_path={tmp_path / 'empty-model'}"), "no config.json"
    )


def test_wrong_data_extension(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a,b\n")
    _assert_one_line_error(run_cli("train", f"data.train={data}"), "neither JSONL")


def test_sample_data_cli(tmp_path):
    proc = run_cli("sample-data", "--out", str(tmp_path), "--train-rows", "20", "--eval-rows", "10")
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 20


@pytest.mark.parametrize("verb", ["train", "quickstart", "eval", "sample-data"])
def test_help(verb):
    assert run_cli(verb, "--help").returncode == 0
