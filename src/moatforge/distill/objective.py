"""The student's loss: α · T² · D(teacher‖student) + (1 − α) · next-token cross-entropy, summed over targets.

It plugs into the fine-tuning worker loop as its ``objective``; the loop's global-token normalisation then
applies to both parts alike.
"""

from __future__ import annotations

from moatforge.config import DistillArgs, MoatforgeConfig
from moatforge.train.loop import target_logits, torch_from


class DistillObjective:
    def __init__(self, args: DistillArgs, teacher_dir: str, vocab_size: int):
        self.args, self.teacher_dir, self.vocab_size = args, teacher_dir, vocab_size
        self.teacher = None

    def setup(self, cfg: MoatforgeConfig, device, ds_config: dict) -> None:
        if self.args.mode == "online":
            from moatforge.distill.teacher import load_online_teacher

            self.teacher = load_online_teacher(
                self.teacher_dir, device, ds_config, cfg.train.zero_stage, cfg.cluster.use_gpu
            )

    def teacher_outputs(self, batch: dict, device) -> dict:
        if self.teacher is None:
            if "kd_ids" not in batch:
                raise RuntimeError("offline distillation rows carry no teacher columns (kd_ids)")
            return {n: torch_from(batch[n], device) for n in ("kd_ids", "kd_logprobs", "kd_log_tail")}
        from moatforge.distill.teacher import score_batch

        return score_batch(self.teacher, batch, device, self.args.top_k, self.args.temperature, self.vocab_size)

    def __call__(self, engine, batch: dict, device):
        import torch.nn.functional as F

        logits, targets = target_logits(engine, batch, device)
        ce = F.cross_entropy(logits.float(), targets, reduction="sum")
        kd = self.kd_sum(logits, self.teacher_outputs(batch, device))
        total = self.args.alpha * kd + (1 - self.args.alpha) * ce
        return total, {"ce_loss": float(ce.detach()), "kd_loss": float(kd.detach())}

    def kd_sum(self, logits, teacher: dict):
        from moatforge.distill.losses import kd_loss_sum

        n = logits.shape[0]
        return kd_loss_sum(
            logits,
            teacher["kd_ids"].reshape(n, -1),
            teacher["kd_logprobs"].reshape(n, -1),
            teacher["kd_log_tail"].reshape(n),
            loss=self.args.loss,
            beta=self.args.beta,
            temperature=self.args.temperature,
            vocab_size=self.vocab_size,
        )
