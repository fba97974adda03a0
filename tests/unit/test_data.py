import json

import pytest

from moatforge.chat_template import parse_assistant_output
from moatforge.data import IGNORE_INDEX, BadRow, collate, encode_example, generation_prompt, normalize_row, pack
from moatforge.sample_data import generate

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up an order.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    }
]
CALL = {"id": "c1", "type": "function", "function": {"name": "get_order_status", "arguments": '{"order_id": "A-17"}'}}
TWO_STEP = {
    "messages": [
        {"role": "system", "content": "You run operations."},
        {"role": "user", "content": "Where is order A-17?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
        {"role": "assistant", "content": "Order A-17 has shipped."},
    ],
    "tools": TOOLS,
}


def _masked_pieces(tokenizer, enc):
    """Decode each maximal run of loss-bearing tokens."""
    pieces, run = [], []
    for tok, label in zip(enc.input_ids, enc.labels, strict=True):
        if label != IGNORE_INDEX:
            run.append(tok)
        elif run:
            pieces.append(tokenizer.decode(run))
            run = []
    if run:
        pieces.append(tokenizer.decode(run))
    return pieces


def test_masked_tokens_are_exactly_the_assistant_replies(tokenizer):
    enc = encode_example(tokenizer, TWO_STEP, max_seq_len=2048)
    pieces = _masked_pieces(tokenizer, enc)
    assert pieces == [
        '<tool_call>{"name": "get_order_status", "arguments": {"order_id": "A-17"}}</tool_call><|im_end|>',
        "Order A-17 has shipped.<|im_end|>",
    ]
    # labels equal the ids wherever they are not masked
    assert all(lab in (IGNORE_INDEX, tok) for tok, lab in zip(enc.input_ids, enc.labels, strict=True))


def test_tools_rendered_in_system_prompt(tokenizer):
    text = tokenizer.decode(encode_example(tokenizer, TWO_STEP, max_seq_len=2048).input_ids)
    assert text.startswith("<|im_start|>system\nYou run operations.")
    system = text.split("<|im_end|>")[0]
    assert "\nget_order_status(order_id: string) - Look up an order.\n" in system
    assert "<|im_start|>tool\n" in text


def test_generation_prompt_ends_before_final_turn(tokenizer):
    prompt = generation_prompt(tokenizer, TWO_STEP["messages"], TOOLS)
    assert prompt.endswith('{"status": "shipped"}<|im_end|>\n<|im_start|>assistant\n')


def test_rendered_calls_parse_back(tokenizer):
    full = tokenizer.decode(encode_example(tokenizer, TWO_STEP, max_seq_len=2048).input_ids)
    reply = full.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = parse_assistant_output(reply)
    assert parsed.error is None
    assert parsed.tool_calls == [{"name": "get_order_status", "arguments": {"order_id": "A-17"}}]


def test_parse_malformed_and_parallel():
    bad = parse_assistant_output('<tool_call>{"name": "x", "arguments": {oops}</tool_call>')
    assert bad.error and not bad.tool_calls
    two = parse_assistant_output('<tool_call>{"name":"a","arguments":{}}</tool_call>\n<tool_call>{"name":"b"}')
    assert [c["name"] for c in two.tool_calls] == ["a", "b"] and two.error is None
    text = parse_assistant_output("Just text.")
    assert text.content == "Just text." and not text.tool_calls


def test_text_rows_train_on_everything(tokenizer):
    enc = encode_example(tokenizer, {"text": "Invoices are due in thirty days."}, max_seq_len=64)
    assert enc.labels == enc.input_ids
    assert enc.input_ids[-1] == tokenizer.eos_token_id


def test_overlong_drop_and_truncate(tokenizer):
    with pytest.raises(BadRow) as err:
        encode_example(tokenizer, TWO_STEP, max_seq_len=40, overlong="drop")
    assert err.value.status == "overlong"
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello " * 50}]}
    enc = encode_example(tokenizer, row, max_seq_len=30, overlong="truncate")
    assert len(enc.input_ids) == 30 and any(lab != IGNORE_INDEX for lab in enc.labels)
    with pytest.raises(BadRow) as err:
        encode_example(tokenizer, TWO_STEP, max_seq_len=20, overlong="truncate")
    assert err.value.status == "no_target"


@pytest.mark.parametrize(
    "row, reason",
    [
        ([1, 2], "not a JSON object"),
        ({"foo": "bar"}, "neither"),
        ({"text": "   "}, "neither"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "valid role"),
        ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}, "not a string"),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "f", "arguments": "{"}}],
                    },
                ]
            },
            "not valid JSON",
        ),
        ({"messages": "not json", "tools": None}, "not valid JSON"),
    ],
)
def test_bad_rows(row, reason):
    with pytest.raises(BadRow, match=reason):
        normalize_row(row)


def test_messages_and_tools_as_json_strings(tokenizer):
    row = {"messages": json.dumps(TWO_STEP["messages"]), "tools": json.dumps(TOOLS)}
    assert encode_example(tokenizer, row, 2048).input_ids == encode_example(tokenizer, TWO_STEP, 2048).input_ids


def test_every_sample_row_encodes(tokenizer):
    train, evaluation = generate(seed=3, n_train=30, n_eval=10)
    for row in train + evaluation:
        enc = encode_example(tokenizer, row, max_seq_len=2048)
        assert sum(lab != IGNORE_INDEX for lab in enc.labels) > 3


def test_pack_and_collate():
    from moatforge.data import Encoded

    packed = pack([Encoded([1, 2, 3], [1, 2, 3]), Encoded([4, 5], [4, 5]), Encoded([6, 7, 8], [6, 7, 8])], 5)
    assert [p.input_ids for p in packed] == [[1, 2, 3, 4, 5], [6, 7, 8]]
    assert packed[0].labels == [1, 2, 3, IGNORE_INDEX, 5]
    batch = collate([[1, 2, 3], [4]], [[1, 2, 3], [4]], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
