"""LoRA under ZeRO-3: only adapter weights train, the adapter loads with plain peft, merged == base + adapter."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from moatforge.errors import MoatforgeError
from moatforge.train.run import run_training

from .helpers import read_jsonl, sample_rows, tiny_config, write_rows

TARGETS = ["q_proj", "v_proj", "down_proj"]


@pytest.fixture(scope="module")
def lora_run(ray_cluster, tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    bad_lines = ("this is not json", json.dumps({"foo": "no text or messages"}), json.dumps([1, 2]))
    train = write_rows(tmp / "train.jsonl", sample_rows(12), extra_lines=bad_lines)
    evaluation = write_rows(tmp / "eval.jsonl", sample_rows(4, seed=9))
    cfg = tiny_config(
        tmp,
        tiny_model_dir,
        train,
        "lora3",
        "train.zero_stage=3",
        "train.max_steps=3",
        f"data.eval={evaluation}",
        "train.eval_every_steps=2",
        "lora.enabled=true",
        "lora.r=4",
        "lora.alpha=8",
        f"lora.target_modules=[{','.join(TARGETS)}]",
    )
    summary = run_training(cfg)
    return summary, tmp / "runs" / "lora3"


def test_run_directory_contract(lora_run):
    summary, run_dir = lora_run
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "final/model/config.json", "final/adapter"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "final" / "model").glob("*.safetensors"))
    assert (run_dir / "final" / "model" / "tokenizer_config.json").exists()
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["status"] == "finished" and on_disk["steps"] == 3 and on_disk["restarts"] == 0
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert {"step", "loss", "lr", "tokens", "tokens_per_s", "elapsed_s"} <= set(m)
    assert [("eval_loss" in m) for m in metrics] == [False, True, True]


def test_bad_rows_are_skipped_and_counted(lora_run):
    summary, _ = lora_run
    assert summary["train_row_counts"] == {"ok": 12, "bad_row": 3}


def test_only_adapter_weights_change_and_merge_is_exact(lora_run, tiny_model_dir):
    _, run_dir = lora_run
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "final" / "model").eval()
    adapter = load_file(run_dir / "final" / "adapter" / "adapter_model.safetensors")
    config = json.loads((run_dir / "final" / "adapter" / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    base_sd, merged_sd = base.state_dict(), merged.state_dict()
    changed = 0
    for name, weight in base_sd.items():
        module = name.removesuffix(".weight")
        a_key = f"base_model.model.{module}.lora_A.weight"
        if a_key in adapter:
            delta = adapter[f"base_model.model.{module}.lora_B.weight"] @ adapter[a_key] * scale
            assert delta.abs().max() > 0, f"adapter for {module} never trained"
            torch.testing.assert_close(merged_sd[name], weight + delta, rtol=1e-5, atol=1e-6)
            changed += 1
        else:
            assert torch.equal(merged_sd[name], weight), f"frozen weight {name} changed"
    assert changed == 2 * len(TARGETS)  # 2 layers

    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), run_dir / "final" / "adapter"
    ).eval()
    ids = torch.randint(0, 1000, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model(ids).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(base(ids).logits, merged(ids).logits)


def test_no_usable_rows_is_one_clear_error(ray_cluster, tiny_model_dir, tmp_path):
    train = write_rows(tmp_path / "bad.jsonl", [{"foo": 1}], extra_lines=("nope",))
    cfg = tiny_config(tmp_path, tiny_model_dir, train, "empty")
    with pytest.raises(MoatforgeError, match="has no usable rows") as err:
        run_training(cfg)
    assert "\n" not in str(err.value)
