"""The reworded transfer set: which words may change, how they change, and what lands in the file."""

import json
import random
import re

import pytest

from moatforge.distill.augment import _answer_message, reword, reworded_rows, run_augment, swappable_spans
from moatforge.errors import MoatforgeError

_CODE = re.compile(r"[A-Z]+-\d+|\d[\d,.]*")


def _words(text: str, spans) -> list[str]:
    return [text[a:b] for a, b in spans]


def test_ids_codes_numbers_and_quoted_titles_are_never_swappable():
    text = 'Please log "Checkout page frozen" for ORD-123 and PN-3978, 45.5 USD, as URGENT for the support team.'
    assert _words(text, swappable_spans(text)) == ["Please", "log", "for", "and", "for", "the", "support", "team"]


def _uniform_scorer(tokenizer, favourite: str):
    """Log-probabilities that put most mass on one word, so the swap's outcome is known."""
    import torch

    favourite_id = tokenizer(" " + favourite, add_special_tokens=False)["input_ids"]
    assert len(favourite_id) == 1
    vocab = len(tokenizer)

    def scorer(ids):
        logits = torch.zeros(len(ids), vocab)
        logits[:, favourite_id[0]] = 20.0
        return torch.log_softmax(logits, dim=-1)

    return scorer


def test_reword_swaps_whole_words_for_predicted_ones_and_keeps_the_ids(tokenizer):
    text = "Please cancel order ORD-48213 and tell the customer today."
    out, n = reword(text, tokenizer, _uniform_scorer(tokenizer, "check"), rate=1.0, rng=random.Random(0))
    assert n >= 3
    assert _CODE.findall(out) == _CODE.findall(text)
    assert out.count("check") == n
    assert "Please" in out  # the first token has no prefix to predict it from
    assert out != text


def test_reword_always_swaps_one_word_when_it_can_and_none_when_it_cannot(tokenizer):
    scorer = _uniform_scorer(tokenizer, "check")
    text = "Please cancel order ORD-48213 and tell the customer today."
    out, n = reword(text, tokenizer, scorer, rate=1e-9, rng=random.Random(1))
    assert n == 1 and out != text
    assert reword("ORD-1 PAY-2", tokenizer, scorer, rate=1.0, rng=random.Random(0)) == ("ORD-1 PAY-2", 0)


def test_reworded_rows_change_only_user_turns_and_keep_their_source(tokenizer, sample_paths):
    rows = [json.loads(line) for line in sample_paths["train"].read_text().splitlines()][:10]
    out, swapped, skipped = reworded_rows(rows, tokenizer, _uniform_scorer(tokenizer, "check"), 2, 0.3, seed=0)
    assert len(out) + skipped == 2 * len(rows) and swapped >= len(out)
    for row in out:
        source = rows[row["augmented_from"]]
        assert row["tools"] == source["tools"]
        for new, old in zip(row["messages"], source["messages"], strict=True):
            assert new["role"] == old["role"]
            if old["role"] != "user":
                assert new == old
            else:
                assert _CODE.findall(new["content"]) == _CODE.findall(old["content"])


def test_teacher_answers_become_data_set_messages():
    call = _answer_message('<tool_call>{"name": "cancel_order", "arguments": {"order_id": "ORD-1"}}</tool_call>')
    assert call["content"] is None and call["tool_calls"][0]["function"]["name"] == "cancel_order"
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"order_id": "ORD-1"}
    assert _answer_message("Which order?") == {"role": "assistant", "content": "Which order?"}
    assert _answer_message('<tool_call>{"name": "cancel_order", "arguments": {</tool_call>') is None


def test_teacher_answers_make_rows_the_training_data_reader_accepts(sample_paths):
    from moatforge.data import normalize_row

    row = json.loads(sample_paths["train"].read_text().splitlines()[0])
    for text in ('<tool_call>{"name": "get_order_status", "arguments": {"order_id": "ORD-1"}}</tool_call>', "Which?"):
        messages = normalize_row({**row, "messages": row["messages"][:-1] + [_answer_message(text)]})["messages"]
        assert messages[-1]["role"] == "assistant"


def test_run_augment_drops_answers_cut_off_by_the_token_budget(tiny_model_dir, sample_paths, tmp_path):
    """A random tiny model never ends its answer, so every answer runs into the budget and none is kept."""
    out = tmp_path / "aug" / "train.jsonl"
    summary = run_augment(str(tiny_model_dir), str(sample_paths["train"]), str(out), variants=2, seed=3, limit=3)
    assert summary.rows_in == 3 and summary.rows_out == 0
    assert summary.truncated_answers == 6 - summary.no_swappable_word > 0
    assert out.read_text() == ""
    assert not list(out.parent.glob("*.tmp*"))


@pytest.mark.parametrize(("kwargs", "message"), [({"variants": 0}, "--variants"), ({"rate": 0}, "--swap-rate")])
def test_run_augment_rejects_bad_settings_before_loading_anything(tmp_path, kwargs, message):
    with pytest.raises(MoatforgeError, match=message):
        run_augment("no-such-model", str(tmp_path / "missing.jsonl"), str(tmp_path / "out.jsonl"), **kwargs)
