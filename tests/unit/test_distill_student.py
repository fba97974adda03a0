"""Pruned students, the shared-vocabulary check, and offline/online teacher outputs agreeing on one batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moatforge.config import DistillArgs
from moatforge.data import collate, encode_example
from moatforge.distill.objective import DistillObjective
from moatforge.distill.run import check_shared_vocab
from moatforge.distill.teacher import TeacherScorer, score_batch
from moatforge.errors import MoatforgeError
from moatforge.models import (
    block_to_drop,
    create_tiny_model,
    even_layers,
    greedy_layers,
    layer_importance,
    load_model,
    prune_layers,
    removal_losses,
)


@pytest.fixture(scope="module")
def four_layer_dir(tmp_path_factory):
    """A random 4-layer model with peaked output distributions (a scaled final norm), as a trained one has;
    a plain random one predicts near-uniformly over 49k tokens, where every divergence is ~0."""
    path = create_tiny_model(tmp_path_factory.mktemp("teacher") / "model", hidden_size=32, layers=4, seed=3)
    model = load_model(path)
    with torch.no_grad():
        model.model.norm.weight.mul_(40.0)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def batch(tokenizer, sample_paths):
    rows = [json.loads(line) for line in sample_paths["train"].read_text().splitlines()[:3]]
    encoded = [encode_example(tokenizer, r, 1024) for r in rows]
    return collate([e.input_ids for e in encoded], [e.labels for e in encoded], tokenizer.pad_token_id)


def test_even_layers_spread_from_first_to_last():
    assert even_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert even_layers(4, 2) == [0, 3]
    assert even_layers(4, 1) == [0]


def test_pruned_student_keeps_exactly_the_requested_layers_and_runs(four_layer_dir, tmp_path, batch):
    out = prune_layers(four_layer_dir, [0, 2], tmp_path / "student")
    teacher, student = load_model(four_layer_dir), load_model(out)
    assert student.config.num_hidden_layers == 2
    for new, old in enumerate([0, 2]):
        for (name, p_s), (_, p_t) in zip(
            student.model.layers[new].named_parameters(), teacher.model.layers[old].named_parameters(), strict=True
        ):
            assert torch.equal(p_s, p_t), name
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.lm_head.weight, student.model.embed_tokens.weight)  # ties survive
    ids = torch.from_numpy(batch["input_ids"])
    with torch.no_grad():
        logits = student(input_ids=ids, attention_mask=torch.from_numpy(batch["attention_mask"])).logits
        generated = student.generate(ids[:1, :20], max_new_tokens=4, do_sample=False)
    assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all()
    assert generated.shape[1] == 24
    assert not list(tmp_path.glob(".prune-*"))  # the temp dir was renamed, nothing half-written left


def test_prune_rejects_layers_the_model_lacks(four_layer_dir, tmp_path):
    with pytest.raises(MoatforgeError, match="cannot keep layers"):
        prune_layers(four_layer_dir, [0, 4], tmp_path / "x")


def test_layer_importance_scores_every_layer(four_layer_dir, batch):
    scores = layer_importance(load_model(four_layer_dir).eval(), [batch])
    assert len(scores) == 4 and all(0 <= s <= 2 for s in scores) and len(set(scores)) == 4


def test_block_to_drop_is_the_block_whose_pruned_model_has_the_lowest_loss(tmp_path, batch):
    path = create_tiny_model(tmp_path / "six", hidden_size=32, layers=6, seed=5)
    model = load_model(path).eval()
    layers = list(model.model.layers)
    start = block_to_drop(model, [batch], drop=3)
    assert list(model.model.layers) == layers  # the model is left whole

    def loss_without(first: int) -> float:
        kept = [i for i in range(6) if not first <= i < first + 3]
        pruned = load_model(prune_layers(path, kept, tmp_path / f"p{first}")).eval()
        with torch.no_grad():
            out = pruned(
                input_ids=torch.as_tensor(batch["input_ids"]),
                attention_mask=torch.as_tensor(batch["attention_mask"]),
                labels=torch.as_tensor(batch["labels"]),
            )
        return float(out.loss)

    losses = [loss_without(first) for first in range(3)]  # blocks 0-2, 1-3, 2-4: the last layer stays
    assert start == int(np.argmin(losses)), losses
    assert len(set(np.round(losses, 4))) == 3  # the choice is not a tie


@pytest.fixture(scope="module")
def six_layer_model(tmp_path_factory):
    return load_model(create_tiny_model(tmp_path_factory.mktemp("six") / "model", hidden_size=32, layers=6, seed=5))


def stack_loss(model, layers: list, stack: list[int], batch) -> float:
    """The model's own loss with only ``stack`` in place, computed from the embeddings up."""
    model.model.layers = torch.nn.ModuleList([layers[i] for i in stack])
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(batch["input_ids"]),
            attention_mask=torch.as_tensor(batch["attention_mask"]),
            labels=torch.as_tensor(batch["labels"]),
        )
    model.model.layers = torch.nn.ModuleList(layers)
    return float(out.loss)


@pytest.mark.parametrize("kept", [[0, 1, 2, 3, 4, 5], [0, 2, 3, 5]])
def test_removal_losses_replaying_the_layers_below_equal_recomputing_them(six_layer_model, batch, kept):
    model = six_layer_model.eval()
    layers = list(model.model.layers)
    losses = removal_losses(model, layers, kept, [batch])
    model.model.layers = torch.nn.ModuleList(layers)
    assert list(losses) == kept[:-1]  # the last layer is never a candidate
    for left_out, value in losses.items():
        assert value == pytest.approx(stack_loss(model, layers, [i for i in kept if i != left_out], batch), abs=1e-4)
    assert len(set(np.round(list(losses.values()), 4))) == len(losses)  # the candidates differ


def test_greedy_layers_drop_the_least_missed_layer_one_at_a_time(six_layer_model, batch):
    model = six_layer_model.eval()
    layers = list(model.model.layers)
    kept = greedy_layers(model, [batch], keep=3)
    assert list(model.model.layers) == layers  # the model is left whole
    expected = list(range(6))
    while len(expected) > 3:
        losses = {i: stack_loss(model, layers, [j for j in expected if j != i], batch) for i in expected[:-1]}
        expected.remove(min(losses, key=losses.get))
    assert kept == expected and len(kept) == 3 and kept[-1] == 5


def test_vocabulary_mismatch_is_rejected_before_training(four_layer_dir, tmp_path, tokenizer):
    from transformers import AutoTokenizer

    other = tmp_path / "other"
    create_tiny_model(other, hidden_size=32, layers=1)
    tok = AutoTokenizer.from_pretrained(str(other))
    tok.add_tokens(["<ticket_id>"])
    tok.save_pretrained(other)
    with pytest.raises(MoatforgeError, match="do not share a vocabulary.*<ticket_id>"):
        check_shared_vocab(four_layer_dir, other)


def test_padded_vocabulary_rows_are_allowed(four_layer_dir, tmp_path, tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(four_layer_dir))
    config.vocab_size = len(tokenizer) + 64
    config.num_hidden_layers = 1
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "padded")
    tokenizer.save_pretrained(tmp_path / "padded")
    assert check_shared_vocab(four_layer_dir, tmp_path / "padded") == len(tokenizer)


@pytest.mark.parametrize("loss", ["forward_kl", "jsd"])
def test_offline_and_online_teachers_give_the_same_loss_on_the_same_batch(
    four_layer_dir, tmp_path, batch, loss, tokenizer
):
    """Offline: the Ray Data scorer's per-row columns, stored and re-collated. Online: the teacher in the loop."""
    student_dir = prune_layers(four_layer_dir, [0, 3], tmp_path / "student")
    vocab = len(tokenizer)
    args = DistillArgs(teacher=str(four_layer_dir), loss=loss, top_k=8, temperature=2.0, alpha=0.7)
    student = load_model(student_dir)

    # Offline: score rows in batches of 2 (different padding than the training batch), store per row, re-collate.
    scorer = TeacherScorer(str(four_layer_dir), 8, 2.0, vocab, tokenizer.pad_token_id, use_gpu=False)
    rows = {
        "input_ids": [batch["input_ids"][i][batch["attention_mask"][i] == 1] for i in range(3)],
        "labels": [batch["labels"][i][batch["attention_mask"][i] == 1] for i in range(3)],
    }
    scored = [scorer({k: v[i : i + 2] for k, v in rows.items()}) for i in (0, 2)]
    offline_batch = dict(batch)
    for name in ("kd_ids", "kd_logprobs", "kd_log_tail"):
        offline_batch[name] = np.concatenate([np.asarray(x) for part in scored for x in part[name]])
    offline = DistillObjective(args.model_copy(update={"mode": "offline"}), str(four_layer_dir), vocab)
    offline_loss, offline_parts = offline(student, offline_batch, "cpu")

    online = DistillObjective(args.model_copy(update={"mode": "online"}), str(four_layer_dir), vocab)
    online.teacher = load_model(four_layer_dir).eval()
    online_loss, online_parts = online(student, batch, "cpu")

    assert offline_parts["kd_loss"] > 0.1
    assert float(offline_loss.detach()) == pytest.approx(float(online_loss.detach()), rel=1e-5)
    assert offline_parts["kd_loss"] == pytest.approx(online_parts["kd_loss"], rel=1e-5)
    expected = 0.7 * offline_parts["kd_loss"] + 0.3 * offline_parts["ce_loss"]
    assert float(offline_loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_scored_columns_hold_one_entry_per_target_token(four_layer_dir, batch, tokenizer):
    teacher = load_model(four_layer_dir).eval()
    scored = score_batch(teacher, batch, "cpu", top_k=5, temperature=1.0, vocab_size=len(tokenizer))
    targets = int((batch["labels"][:, 1:] != -100).sum())
    assert scored["kd_ids"].shape == (targets, 5) and scored["kd_log_tail"].shape == (targets,)
