"""The teacher's side of distillation: its top-k distribution at every target token, offline or online.

Offline, a Ray Data actor pool runs the teacher once over the prepared training rows and the result is
stored as Parquet next to the run, so the student's epochs and restarts never pay for the teacher again.
Online, the same function runs inside each training worker on the micro-batch at hand. Both paths call
``score_batch`` on the same collated rows, which is why they produce the same loss on the same batch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from moatforge.train.loop import collate_rows, target_logits


def score_batch(teacher, batch: dict, device, top_k: int, temperature: float, vocab_size: int) -> dict:
    """Flat top-k ids, log-probabilities and log tail mass for every target token of a collated batch."""
    import torch

    from moatforge.distill.losses import teacher_topk

    with torch.no_grad():
        logits, _ = target_logits(teacher, batch, device)
        ids, logprobs, log_tail = teacher_topk(logits, top_k, temperature, vocab_size)
    return {"kd_ids": ids.to(torch.int32), "kd_logprobs": logprobs, "kd_log_tail": log_tail}


class TeacherScorer:
    """Ray Data callable class: loads the teacher once per actor, then adds its top-k columns to row batches."""

    def __init__(
        self,
        teacher_dir: str,
        top_k: int,
        temperature: float,
        vocab_size: int,
        pad_id: int,
        use_gpu: bool,
        threads: int = 1,
    ):
        import torch

        from moatforge.models import load_model

        torch.set_num_threads(threads)  # Ray sizes OMP threads from the actor's (fractional) CPU request

        self.device = torch.device("cuda" if use_gpu else "cpu")
        dtype = torch.bfloat16 if use_gpu else torch.float32
        self.teacher = load_model(teacher_dir, dtype=dtype).to(self.device).eval()
        self.top_k, self.temperature, self.vocab_size, self.pad_id = top_k, temperature, vocab_size, pad_id

    def __call__(self, batch: dict) -> dict:
        collated = collate_rows(batch, self.pad_id)
        scored = score_batch(self.teacher, collated, self.device, self.top_k, self.temperature, self.vocab_size)
        per_row = [int((np.asarray(labels)[1:] != -100).sum()) for labels in batch["labels"]]
        bounds = np.cumsum([0] + per_row)
        out = dict(batch)
        for name, values in scored.items():
            flat = values.float().cpu().numpy() if name != "kd_ids" else values.cpu().numpy()
            rows = [flat[bounds[i] : bounds[i + 1]].reshape(-1) for i in range(len(per_row))]
            out[name] = _list_column(rows, pa.int32() if name == "kd_ids" else pa.float32())
        return out


def _list_column(rows: list[np.ndarray], type_: pa.DataType) -> np.ndarray:
    """An object array of 1-D arrays: Ray Data stores it as a list column, whatever the lengths."""
    column = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        column[i] = r.astype(type_.to_pandas_dtype())
    return column


def load_online_teacher(teacher_dir: str, device, ds_config: dict, zero_stage: int, use_gpu: bool):
    """The teacher inside a training worker: a plain replica, or ZeRO-3 partitioned when the student is.

    Under ZeRO-3 each rank holds 1/world of the teacher's weights and gathers them layer by layer in the
    forward pass, so a teacher larger than one device's memory still fits next to the student.
    """
    import torch

    from moatforge.models import load_model

    dtype = torch.bfloat16 if use_gpu else torch.float32
    if zero_stage != 3:
        return load_model(teacher_dir, dtype=dtype).to(device).eval()
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig

    inference_config = {
        "train_micro_batch_size_per_gpu": ds_config["train_micro_batch_size_per_gpu"],
        "zero_optimization": {"stage": 3},
        **({"bf16": {"enabled": True}} if use_gpu else {}),
    }
    keep_alive = HfDeepSpeedConfig(inference_config)  # noqa: F841  (zero.Init while loading)
    model = load_model(teacher_dir, dtype=dtype)
    engine, *_ = deepspeed.initialize(model=model, config=inference_config)
    engine.module.eval()
    return engine.module
