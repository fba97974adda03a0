"""Pure builders for the DeepSpeed config and the learning-rate schedule, so both are unit-testable."""

from __future__ import annotations

import math

from moatforge.config import TrainArgs


def build_deepspeed_config(train: TrainArgs, world_size: int, use_gpu: bool) -> dict:
    """DeepSpeed settings for one run: bf16 on GPUs, fp32 on CPUs, torch's AdamW everywhere.

    torch's AdamW needs no compiled DeepSpeed op, so the same config runs on a laptop CPU and a GPU cluster;
    ``zero_force_ds_cpu_optimizer`` is off so offload keeps that optimizer too.
    """
    zero: dict = {"stage": train.zero_stage}
    if train.zero_stage >= 1:
        zero.update({"overlap_comm": use_gpu, "contiguous_gradients": True})
    if train.offload in ("optimizer", "optimizer+params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": use_gpu}
    if train.offload == "optimizer+params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": use_gpu}
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.micro_batch_size * train.grad_accum * world_size,
        "gradient_clipping": train.max_grad_norm,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": train.lr,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": train.weight_decay,
                "torch_adam": True,
            },
        },
        "zero_optimization": zero,
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": bool(use_gpu)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def warmup_steps(train: TrainArgs, total_steps: int) -> int:
    return int(round(train.warmup_ratio * total_steps))


def lr_factor(step: int, total_steps: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup then cosine decay to ``min_ratio`` of the peak; ``step`` counts optimizer steps from 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def total_steps(train: TrainArgs, rows_per_worker: int) -> int:
    if train.max_steps is not None:
        return train.max_steps
    per_epoch = max(1, math.ceil(rows_per_worker / (train.micro_batch_size * train.grad_accum)))
    return per_epoch * train.epochs
