from pathlib import Path

import pytest
import yaml

from moatforge.config import MoatforgeConfig, load_config, valid_keys
from moatforge.errors import MoatforgeError

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_KEYS = [
    "run.name", "run.storage_path", "cluster.num_workers", "cluster.use_gpu", "model.name_or_path", "data.train",
    "data.eval", "data.max_seq_len", "train.zero_stage", "train.offload", "train.max_steps", "train.epochs",
    "train.micro_batch_size", "train.grad_accum", "train.lr", "train.seed", "train.checkpoint_every_steps",
    "train.max_failures", "train.gradient_checkpointing", "lora.enabled", "lora.r", "lora.alpha",
    "lora.target_modules",
]  # fmt: skip


def test_contract_keys_exist():
    assert set(CONTRACT_KEYS) <= set(valid_keys())


def test_defaults():
    cfg = MoatforgeConfig()
    assert cfg.run.storage_path == "./runs"
    assert cfg.run_dir() == "./runs/moatforge-run"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  zero_stage: 1\nlora:\n  enabled: true\n")
    cfg = load_config(path, ["train.zero_stage=3", "lora.target_modules=[q_proj, v_proj]", "cluster.use_gpu=true"])
    assert cfg.train.lr == 0.001
    assert cfg.train.zero_stage == 3
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.cluster.use_gpu is True


def test_unknown_key_lists_valid_names(tmp_path):
    with pytest.raises(MoatforgeError) as err:
        load_config(None, ["train.learning_rate=1e-4"])
    msg = str(err.value)
    assert "unknown key 'train.learning_rate'" in msg
    assert "lr" in msg and "zero_stage" in msg and "\n" not in msg


def test_unknown_group(tmp_path):
    with pytest.raises(
        MoatforgeError, match="valid keys in the top level: cluster, .*data, .*lora, model, run, .*train"
    ):
        load_config(None, ["trian.lr=1"])


def test_wrong_type_and_range():
    with pytest.raises(MoatforgeError, match=r"train.zero_stage: .*less than or equal to 3 \(got 4\)"):
        load_config(None, ["train.zero_stage=4"])
    with pytest.raises(MoatforgeError, match="train.micro_batch_size"):
        load_config(None, ["train.micro_batch_size=lots"])
    with pytest.raises(MoatforgeError, match="train.offload"):
        load_config(None, ["train.offload=disk"])


def test_offload_needs_zero():
    with pytest.raises(MoatforgeError, match="zero_stage"):
        load_config(None, ["train.zero_stage=0", "train.offload=optimizer"])
    with pytest.raises(MoatforgeError, match="zero_stage=3"):
        load_config(None, ["train.zero_stage=2", "train.offload=optimizer+params"])


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1\n")
    with pytest.raises(MoatforgeError, match="invalid YAML at line"):
        load_config(bad)
    with pytest.raises(MoatforgeError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(MoatforgeError, match="mapping"):
        load_config(scalar)


def test_override_syntax():
    with pytest.raises(MoatforgeError, match="key=value"):
        load_config(None, ["train.lr"])


def test_resolved_config_round_trips():
    cfg = load_config(None, ["train.lr=3e-4", "lora.enabled=true"])
    again = MoatforgeConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize("name", ["sft_lora.yaml", "sft_full_zero3.yaml"])
def test_example_configs(name):
    path = ROOT / "jobs" / "configs" / name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "moatforge train --config jobs/configs/" + name in first
    cfg = load_config(path)
    if name == "sft_lora.yaml":
        assert cfg.lora.enabled and cfg.model.name_or_path == "smollm2-135m-instruct"
    else:
        assert not cfg.lora.enabled and cfg.train.zero_stage == 3


def test_every_job_config_starts_with_the_command_that_runs_it():
    for path in sorted((ROOT / "jobs" / "configs").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# moatforge ") and f"--config jobs/configs/{path.name}" in first, path
        load_config(path)


def test_distill_config_values():
    cfg = load_config(ROOT / "jobs" / "configs" / "distill_student.yaml")
    assert cfg.distill.student == "prune:12" and cfg.distill.mode == "offline" and not cfg.lora.enabled
    with pytest.raises(MoatforgeError, match="distill.loss"):
        load_config(None, ["distill.loss=mse"])
    with pytest.raises(MoatforgeError, match="prune:N"):
        load_config(None, ["distill.student=prune:0"])
