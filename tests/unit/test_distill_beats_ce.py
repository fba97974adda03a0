"""Distillation beats the plain next-token loss at the same budget on a small task, by held-out loss.

The task is a random Markov chain over a small vocabulary: every next token is a draw, so a few training
sequences show one sample per position while a teacher that learned the chain knows the whole
distribution. Both students start from the same weights and take the same optimizer steps on the same
rows; only the objective differs (moatforge's NextTokenLoss vs DistillObjective on the teacher's top-k).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from moatforge.config import DistillArgs
from moatforge.distill.objective import DistillObjective
from moatforge.distill.teacher import score_batch
from moatforge.train.loop import NextTokenLoss, count_targets, forward_loss_sum

VOCAB, LENGTH = 24, 20


def chain(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(VOCAB, 0.3), size=VOCAB)


def sample(transitions: np.ndarray, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    seqs = np.zeros((n, LENGTH), dtype=np.int64)
    seqs[:, 0] = rng.integers(VOCAB, size=n)
    for t in range(1, LENGTH):
        for i in range(n):
            seqs[i, t] = rng.choice(VOCAB, p=transitions[seqs[i, t - 1]])
    return {"input_ids": seqs, "labels": seqs.copy(), "attention_mask": np.ones_like(seqs)}


def model(hidden: int, layers: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def fit(net, objective, batches, lr: float) -> None:
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    for batch in batches:
        loss, _ = objective(net, batch, "cpu")
        opt.zero_grad()
        (loss / count_targets(batch)).backward()
        opt.step()


def held_out_loss(net, batch) -> float:
    with torch.no_grad():
        return float(forward_loss_sum(net, batch, "cpu")) / count_targets(batch)


def test_kd_beats_next_token_loss_at_the_same_budget():
    transitions = chain()
    teacher = model(64, 2, seed=1)
    # Fresh sequences every step: the teacher learns the chain instead of memorising sequences.
    fit(teacher, NextTokenLoss(), (sample(transitions, 64, seed=100 + i) for i in range(60)), lr=3e-3)
    teacher.eval()

    few = sample(transitions, 4, seed=2)  # the student's small training set
    held_out = sample(transitions, 128, seed=3)
    entropy = -(transitions * np.log(transitions)).sum(-1).mean()
    assert held_out_loss(teacher, held_out) < entropy + 0.3  # the teacher learned the chain

    scored = score_batch(teacher, few, "cpu", top_k=8, temperature=1.0, vocab_size=VOCAB)
    offline = {**few, **{k: v.numpy() for k, v in scored.items()}}
    kd = DistillObjective(DistillArgs(teacher="t", alpha=1.0, top_k=8), "t", VOCAB)

    ce_student, kd_student = model(32, 1, seed=5), model(32, 1, seed=5)
    fit(ce_student, NextTokenLoss(), [few] * 60, lr=1e-2)
    fit(kd_student, kd, [offline] * 60, lr=1e-2)
    ce_loss, kd_loss = held_out_loss(ce_student, held_out), held_out_loss(kd_student, held_out)
    print(f"entropy {entropy:.3f} teacher {held_out_loss(teacher, held_out):.3f} ce {ce_loss:.3f} kd {kd_loss:.3f}")
    assert kd_loss < ce_loss - 0.1
