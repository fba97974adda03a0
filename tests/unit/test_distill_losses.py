"""Distillation losses against values computed by hand with numpy."""

import math

import numpy as np
import pytest
import torch

from moatforge.distill.losses import divergence, kd_loss_sum, teacher_topk

TEACHER = np.array([[2.0, 1.0, 0.1, -1.0, 0.5], [0.0, 3.0, -2.0, 1.0, 1.5]])
STUDENT = np.array([[1.0, 1.5, 0.0, -0.5, 0.2], [0.3, 2.0, -1.0, 0.5, 2.5]])


def softmax(x, t):
    e = np.exp(x / t - (x / t).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def buckets(p, ids):
    """Probabilities on the top-k buckets plus one tail bucket."""
    top = np.take_along_axis(p, ids, -1)
    return np.concatenate([top, 1 - top.sum(-1, keepdims=True)], -1)


def kl(p, q):
    return np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0).sum(-1)


def ours(loss, k, t, beta=0.5, vocab=5, teacher=TEACHER, student=STUDENT):
    ids, lp, tail = teacher_topk(torch.tensor(teacher), k, t, vocab)
    return float(
        kd_loss_sum(torch.tensor(student), ids, lp, tail, loss=loss, beta=beta, temperature=t, vocab_size=vocab)
    )


def by_hand(loss, k, t):
    p, q = softmax(TEACHER, t), softmax(STUDENT, t)
    ids = np.argsort(-p, -1)[:, :k]
    bp, bq = buckets(p, ids), buckets(q, ids)
    if loss == "forward_kl":
        return kl(bp, bq).sum() * t * t
    return kl(bq, bp).sum() * t * t


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl"])
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("t", [1.0, 2.0, 0.5])
def test_kl_with_topk_tail_and_temperature_matches_hand_computation(loss, k, t):
    assert ours(loss, k, t) == pytest.approx(by_hand(loss, k, t), rel=1e-5, abs=1e-7)


def test_full_vocabulary_top_k_is_the_exact_kl():
    p, q = softmax(TEACHER, 1.0), softmax(STUDENT, 1.0)
    assert ours("forward_kl", 5, 1.0) == pytest.approx(kl(p, q).sum(), rel=1e-5)
    # a top-k beyond the vocabulary is capped at the vocabulary
    assert ours("forward_kl", 50, 1.0) == pytest.approx(kl(p, q).sum(), rel=1e-5)


def test_temperature_scales_by_t_squared_and_softens():
    p2, q2 = softmax(TEACHER, 2.0), softmax(STUDENT, 2.0)
    assert ours("forward_kl", 5, 2.0) == pytest.approx(4 * kl(p2, q2).sum(), rel=1e-5)


def test_teacher_topk_mass_sums_to_one_and_ignores_padded_rows():
    padded = np.concatenate([TEACHER, np.full((2, 3), 50.0)], -1)  # 3 padded embedding rows with huge logits
    ids, lp, tail = teacher_topk(torch.tensor(padded), 3, 1.0, vocab_size=5)
    assert int(ids.max()) < 5
    total = lp.exp().sum(-1) + tail.exp()
    assert torch.allclose(total, torch.ones(2, dtype=total.dtype), atol=1e-6)
    expected_tail = 1 - np.sort(softmax(TEACHER, 1.0), -1)[:, ::-1][:, :3].sum(-1)
    assert np.allclose(tail.exp().numpy(), expected_tail, rtol=1e-5)


def test_jsd_beta_edges_equal_forward_and_reverse_kl_and_are_continuous():
    fwd, rev = ours("forward_kl", 3, 1.0), ours("reverse_kl", 3, 1.0)
    assert fwd != pytest.approx(rev, rel=1e-3)  # the test below would be vacuous otherwise
    assert ours("jsd", 3, 1.0, beta=0.0) == pytest.approx(fwd, rel=1e-6)
    assert ours("jsd", 3, 1.0, beta=1.0) == pytest.approx(rev, rel=1e-6)
    assert ours("jsd", 3, 1.0, beta=1e-4) == pytest.approx(fwd, rel=2e-3)
    assert ours("jsd", 3, 1.0, beta=1 - 1e-4) == pytest.approx(rev, rel=2e-3)


def test_jsd_half_is_four_times_the_textbook_jsd():
    p, q = softmax(TEACHER, 1.0), softmax(STUDENT, 1.0)
    m = (p + q) / 2
    textbook = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    assert ours("jsd", 5, 1.0, beta=0.5) == pytest.approx(4 * textbook.sum(), rel=1e-5)


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd"])
def test_identical_distributions_give_zero_and_gradients_reach_the_student(loss):
    assert ours(loss, 2, 1.0, teacher=TEACHER, student=TEACHER) == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor(STUDENT, requires_grad=True)
    ids, lp, tail = teacher_topk(torch.tensor(TEACHER), 2, 1.0, 5)
    kd_loss_sum(student, ids, lp, tail, loss=loss, beta=0.5, temperature=1.0, vocab_size=5).backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


def test_unknown_loss_is_rejected():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="forward_kl"):
        divergence(x, x, "mse")


def test_confident_teacher_tail_keeps_its_precision():
    """A tail of ~1e-9 must not come out as 0 or noise: it is a logsumexp, not 1 - sum."""
    logits = torch.tensor([[30.0, 0.0, 0.0, 0.0, 9.3]], dtype=torch.float64)
    _, _, tail = teacher_topk(logits, 2, 1.0, 5)
    expected = math.log(3) - 30.0  # three logits of 0 outside the top-2, normalised by ~e^30
    assert float(tail) == pytest.approx(expected, rel=1e-4)
