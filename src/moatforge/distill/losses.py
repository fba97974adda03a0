"""Distillation losses over a teacher's top-k distribution plus its tail mass.

Storing a full 49k-entry distribution per token is what makes offline distillation impractical, so the
teacher keeps its k most likely tokens and one extra bucket for the rest (the tail). Both distributions are
compared on those k + 1 buckets: the student's probabilities are gathered at the teacher's ids and its
remaining mass becomes the student's tail. With k equal to the vocabulary the loss is the exact full one.

Everything is computed in log space (the tail is a logsumexp over the non-top-k logits, never
``1 - sum(top-k)``), because a confident teacher's tail is ~1e-7 and cancellation would turn it into noise.

The generalized Jensen-Shannon divergence is divided by ``β(1-β)``: that keeps its scale comparable across β
and makes it continuous, tending to forward KL(teacher‖student) as β → 0 and reverse KL(student‖teacher) as
β → 1, which are the values used at exactly 0 and 1.
"""

from __future__ import annotations

import math

LOSSES = ("forward_kl", "reverse_kl", "jsd")


def teacher_topk(logits, top_k: int, temperature: float, vocab_size: int):
    """The teacher's top-k log-probabilities at ``temperature`` and the log of the mass outside them.

    Only the first ``vocab_size`` logits count: padded embedding rows (a vocabulary rounded up for speed)
    are not tokens and must not take probability mass.
    """
    import torch

    logprobs = torch.log_softmax(logits[..., :vocab_size].float() / temperature, dim=-1)
    k = min(top_k, vocab_size)
    values, ids = logprobs.topk(k, dim=-1)
    log_tail = _log_rest(logprobs, ids)
    return ids, values, log_tail


def _log_rest(logprobs, ids):
    """log of the probability outside ``ids`` (-inf when ids cover the vocabulary)."""

    return logprobs.scatter(-1, ids, float("-inf")).logsumexp(dim=-1)


def bucket_logprobs(student_logits, teacher_ids, temperature: float, vocab_size: int):
    """The student's log-probabilities on the teacher's k + 1 buckets."""
    import torch

    logprobs = torch.log_softmax(student_logits[..., :vocab_size].float() / temperature, dim=-1)
    top = logprobs.gather(-1, teacher_ids.long())
    tail = _log_rest(logprobs, teacher_ids.long())
    return torch.cat([top, tail.unsqueeze(-1)], dim=-1)


def _kl(log_p, log_q):
    """KL(p‖q) per row over the last axis; buckets where p is zero contribute nothing."""
    import torch

    term = torch.exp(log_p) * (log_p - log_q)
    return torch.where(torch.isneginf(log_p), torch.zeros_like(term), term).sum(-1)


def divergence(log_p, log_q, loss: str, beta: float = 0.5):
    """Per-token divergence between teacher buckets ``log_p`` and student buckets ``log_q``."""
    import torch

    if loss == "forward_kl" or (loss == "jsd" and beta == 0.0):
        return _kl(log_p, log_q)
    if loss == "reverse_kl" or (loss == "jsd" and beta == 1.0):
        return _kl(log_q, log_p)
    if loss != "jsd":
        raise ValueError(f"unknown distill loss {loss!r}; choose one of {', '.join(LOSSES)}")
    log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1 - beta)]), dim=0)
    return (beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)) / (beta * (1 - beta))


def kd_loss_sum(
    student_logits, teacher_ids, teacher_logprobs, teacher_log_tail, *, loss, beta, temperature, vocab_size
):
    """Summed per-token KD loss, scaled by T² so its gradient size does not shrink with the temperature."""
    import torch

    log_p = torch.cat([teacher_logprobs.float(), teacher_log_tail.float().unsqueeze(-1)], dim=-1)
    log_q = bucket_logprobs(student_logits, teacher_ids, temperature, vocab_size)
    return divergence(log_p, log_q, loss, beta).sum() * temperature**2
