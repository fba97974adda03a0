import pytest

from moatforge.sample_data import TOOLS
from moatforge.toolcall_scoring import calls_from_message, calls_match, score_rows


def _call(name, **arguments):
    return {"name": name, "arguments": arguments}


REFUND = _call("issue_refund", order_id="ORD-12345", amount=49.9, reason="damaged")


def test_right_call_with_cosmetic_differences():
    pred = [_call("issue_refund", reason=" Damaged ", amount=49.9000001, order_id="ord-12345")]
    assert calls_match(pred, [REFUND], TOOLS) == (True, "")


def test_int_is_accepted_for_number():
    ref = [_call("issue_refund", order_id="ORD-1", amount=50, reason="late")]
    pred = [_call("issue_refund", order_id="ORD-1", amount=50.0, reason="late")]
    assert calls_match(pred, ref, TOOLS) == (True, "")
    assert calls_match(ref, pred, TOOLS) == (True, "")


def test_wrong_argument_type():
    pred = [_call("issue_refund", order_id="ORD-12345", amount="49.90", reason="damaged")]
    assert calls_match(pred, [REFUND], TOOLS) == (False, "wrong type for 'amount'")


def test_bool_is_not_an_integer():
    ref = [_call("create_invoice", customer_id="CUST-1", amount=10, currency="EUR", due_days=1)]
    pred = [_call("create_invoice", customer_id="CUST-1", amount=10, currency="EUR", due_days=True)]
    assert calls_match(pred, ref, TOOLS) == (False, "wrong type for 'due_days'")


def test_wrong_type_without_schema_uses_reference_type():
    pred = [_call("issue_refund", order_id="ORD-12345", amount="49.9", reason="damaged")]
    assert calls_match(pred, [REFUND]) == (False, "wrong type for 'amount'")


def test_missing_required_argument():
    pred = [_call("issue_refund", order_id="ORD-12345", amount=49.9)]
    assert calls_match(pred, [REFUND], TOOLS) == (False, "missing required argument 'reason'")


def test_extra_argument():
    pred = [_call("issue_refund", order_id="ORD-12345", amount=49.9, reason="damaged", note="x")]
    assert calls_match(pred, [REFUND], TOOLS) == (False, "unknown argument 'note'")
    ok, reason = calls_match(pred, [REFUND])
    assert not ok and "note" in reason


def test_wrong_value_and_invalid_enum():
    pred = [_call("issue_refund", order_id="ORD-12346", amount=49.9, reason="damaged")]
    assert calls_match(pred, [REFUND], TOOLS) == (False, "wrong value for 'order_id'")
    pred = [_call("issue_refund", order_id="ORD-12345", amount=49.9, reason="broken")]
    assert calls_match(pred, [REFUND], TOOLS) == (False, "wrong value for 'reason'")


def test_parallel_calls_in_other_order():
    ref = [
        _call("get_order_status", order_id="ORD-1"),
        _call("check_inventory", sku="AB-1", warehouse="dallas"),
    ]
    pred = list(reversed(ref))
    assert calls_match(pred, ref, TOOLS) == (True, "")


def test_parallel_same_function_one_wrong():
    ref = [_call("get_order_status", order_id="ORD-1"), _call("get_order_status", order_id="ORD-2")]
    pred = [_call("get_order_status", order_id="ORD-2"), _call("get_order_status", order_id="ORD-3")]
    assert calls_match(pred, ref, TOOLS) == (False, "wrong value for 'order_id'")


def test_parallel_duplicate_prediction_does_not_cover_both():
    ref = [_call("get_order_status", order_id="ORD-1"), _call("get_order_status", order_id="ORD-2")]
    pred = [ref[0], ref[0]]
    assert calls_match(pred, ref, TOOLS)[0] is False


def test_wrong_function_name():
    pred = [_call("cancel_order", order_id="ORD-12345", notify_customer=True)]
    assert calls_match(pred, [REFUND], TOOLS) == (False, "wrong function name")


def test_wrong_number_of_calls():
    assert calls_match([REFUND, REFUND], [REFUND], TOOLS) == (False, "wrong number of calls")


def test_malformed_empty_prediction():
    ok, reason = calls_match([], [REFUND], TOOLS)
    assert not ok and reason


def test_malformed_arguments():
    assert calls_match([{"name": "issue_refund", "arguments": "{not json"}], [REFUND]) == (
        False,
        "malformed call",
    )


def test_text_expected_and_given():
    assert calls_match([], [], TOOLS) == (True, "")


def test_text_expected_but_call_given():
    ok, reason = calls_match([REFUND], [], TOOLS)
    assert not ok and reason


def test_calls_from_message():
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_order_status", "arguments": '{"order_id": "O"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "x", "arguments": "{bad"}},
        ],
    }
    assert calls_from_message(message) == [
        {"name": "get_order_status", "arguments": {"order_id": "O"}},
        {"name": "x", "arguments": "{bad"},
    ]
    assert calls_from_message({"role": "assistant", "content": "hi"}) == []


def test_score_rows():
    preds = [[REFUND], [], [REFUND]]
    refs = [[REFUND], [], []]
    result = score_rows(preds, refs, [TOOLS, TOOLS, None])
    assert result["n"] == 3
    assert result["correct"] == 2
    assert result["tool_call_accuracy"] == pytest.approx(2 / 3)
    assert sum(result["reasons"].values()) == 1
    assert score_rows([], [])["tool_call_accuracy"] == 0.0
    with pytest.raises(ValueError):
        score_rows([[]], [[], []])
