"""Write ``final/model`` (merged Hugging Face model) and ``final/adapter`` (peft) from a trained engine.

Under ZeRO-3 every rank must take part in gathering the partitioned parameters, then rank 0 alone builds
a fresh model from the config, loads the gathered state dict and saves it, so the result loads with plain
transformers/peft and never depends on DeepSpeed or moatforge.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from pathlib import Path

from moatforge import storage


def gather_state_dict(engine, zero_stage: int, rank: int) -> dict | None:
    import deepspeed

    params = list(engine.module.parameters())
    ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero_stage == 3 else nullcontext()
    with ctx:
        if rank != 0:
            return None
        return {k: v.detach().to("cpu", copy=True).float() for k, v in engine.module.state_dict().items()}


def export_final(state_dict: dict, model_dir: Path, tokenizer, lora_args, run_dir: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # A live ZeRO-3 loading hook would partition this single-process model and wait on the other ranks.
    unset_hf_deepspeed_config()
    config = AutoConfig.from_pretrained(str(model_dir))
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if lora_args.enabled:
            from peft import get_peft_model

            peft_model = get_peft_model(fresh, peft_config(lora_args, str(model_dir)))
            missing, unexpected = peft_model.load_state_dict(state_dict, strict=False)
            _check_keys(missing, unexpected)
            peft_model.save_pretrained(tmp_path / "adapter")
            tokenizer.save_pretrained(tmp_path / "adapter")
            merged = peft_model.merge_and_unload()
        else:
            missing, unexpected = fresh.load_state_dict(state_dict, strict=False)
            _check_keys(missing, unexpected)
            merged = fresh
        merged.save_pretrained(tmp_path / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp_path / "model")
        storage.upload_dir(tmp_path / "model", storage.join(run_dir, "final", "model"))
        if lora_args.enabled:
            storage.upload_dir(tmp_path / "adapter", storage.join(run_dir, "final", "adapter"))


def _check_keys(missing, unexpected) -> None:
    # Tied output embeddings appear under one name only; anything else missing means a broken export.
    real_missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if real_missing or unexpected:
        raise RuntimeError(f"export state dict mismatch: missing={real_missing[:5]} unexpected={unexpected[:5]}")


def peft_config(lora_args, base_path: str):
    from peft import LoraConfig

    cfg = LoraConfig(
        r=lora_args.r,
        lora_alpha=lora_args.alpha,
        lora_dropout=lora_args.dropout,
        target_modules=list(lora_args.target_modules),
        task_type="CAUSAL_LM",
    )
    cfg.base_model_name_or_path = base_path
    return cfg
