import json

import pandas as pd
import pytest

from moatforge.curate.pii import PiiArgs, pii, redact


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("mail john.doe+ops@example.co.uk today", "mail <EMAIL> today", "email"),
        ("card 4111 1111 1111 1111 on file", "card <CREDIT_CARD> on file", "credit_card"),
        ("card 4111-1111-1111-1111.", "card <CREDIT_CARD>.", "credit_card"),
        ("amex 378282246310005", "amex <CREDIT_CARD>", "credit_card"),
        ("from 8.8.8.8.", "from <IP_ADDRESS>.", "ip_address"),
        ("via 2001:4860:4860::8888 today", "via <IP_ADDRESS> today", "ip_address"),
        ("call +1 (415) 555-2671 now", "call <PHONE> now", "phone"),
        ("call 415-555-2671 now", "call <PHONE> now", "phone"),
        ("ring +44 20 7946 0958", "ring <PHONE>", "phone"),
        ("or +49 (0)30 1234567.", "or <PHONE>.", "phone"),
        ("or +33612345678", "or <PHONE>", "phone"),
        ("key AKIAIOSFODNN7EXAMPLE here", "key <SECRET> here", "secret"),
        ("token ghp_" + "a1B2" * 9 + " leaked", "token <SECRET> leaked", "secret"),
        ("slack xoxb-123456789012-abcdefABCDEF", "slack <SECRET>", "secret"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc123", "Authorization: Bearer <SECRET>", "secret"),
        (
            "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\nAAAA\n-----END OPENSSH PRIVATE KEY-----\nend",
            "key:\n<SECRET>\nend",
            "secret",
        ),
    ],
)
def test_redacts(text, expected, kind):
    out, counts = redact(text)
    assert out == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "timestamp 1700000000000 is not a card",
        "private 10.0.0.1, 192.168.1.20, 172.16.5.4, loopback 127.0.0.1 and ::1, link-local fe80::1",
        "order ORD-12345 shipped on 2024-01-15 at 10:30:00",
        "version 1.2.3, mac 00:1A:2B:3C:4D:5E, slice a[1::2], ratio 3:4",
        "the bearer of bad news and bearer instruments",
        "sku SKU-AB-1234567 and ticket TCK-20240115",
    ],
)
def test_leaves_non_pii_alone(text):
    assert redact(text) == (text, {})


def test_kinds_limit_what_is_redacted():
    text = "mail a@example.com or call 415-555-2671"
    assert redact(text, kinds={"phone"}) == ("mail a@example.com or call <PHONE>", {"phone": 1})


def _chat_row(arguments: str) -> list[dict]:
    call = {"id": "c1", "type": "function", "function": {"name": "email_customer", "arguments": arguments}}
    return [
        {"role": "user", "content": "Email bob@corp.com about the refund."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"sent_to": "bob@corp.com", "from_ip": "8.8.4.4"}'},
        {"role": "assistant", "content": "Done."},
    ]


def test_step_redacts_text_messages_and_tool_arguments():
    arguments = json.dumps({"to": "bob@corp.com", "cc": ["ann@corp.com"], "body": "Refund sent", "urgent": True})
    batch = pd.DataFrame(
        {
            "id": ["t", "c", "n"],
            "text": ["Reach me at +1 415 555 2671.", None, "Nothing personal here."],
            "messages": [None, _chat_row(arguments), None],
            "source": ["tickets", "logs", "docs"],
        }
    )
    kept, rejected = pii(batch, PiiArgs())
    assert rejected.empty and list(rejected.columns) == [*batch.columns, "step", "reason"]
    assert list(kept["id"]) == ["t", "c", "n"]
    assert list(kept["source"]) == ["tickets", "logs", "docs"]
    assert kept.loc[0, "text"] == "Reach me at <PHONE>."
    assert kept.loc[2, "text"] == "Nothing personal here."

    messages = kept.loc[1, "messages"]
    assert messages[0]["content"] == "Email <EMAIL> about the refund."
    args = json.loads(messages[1]["tool_calls"][0]["function"]["arguments"])  # still valid JSON
    assert args == {"to": "<EMAIL>", "cc": ["<EMAIL>"], "body": "Refund sent", "urgent": True}
    assert json.loads(messages[2]["content"]) == {"sent_to": "<EMAIL>", "from_ip": "<IP_ADDRESS>"}

    counts = [json.loads(c) for c in kept["pii_counts"]]
    assert counts == [{"phone": 1}, {"email": 4, "ip_address": 1}, {}]
    # the input batch is not modified in place
    assert batch.loc[1, "messages"][0]["content"] == "Email bob@corp.com about the refund."


def test_step_keeps_untouched_arguments_byte_for_byte_and_handles_json_string_messages():
    arguments = '{"to":"nobody",  "n": 1}'
    raw = json.dumps(_chat_row(arguments))
    batch = pd.DataFrame({"id": ["c"], "messages": [raw]})
    kept, _ = pii(batch, PiiArgs())
    out = kept.loc[0, "messages"]
    assert isinstance(out, str)
    messages = json.loads(out)
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == arguments
    assert messages[0]["content"] == "Email <EMAIL> about the refund."


def test_step_with_nothing_to_redact_only_adds_counts():
    batch = pd.DataFrame({"id": ["a"], "text": ["plain words"]})
    kept, rejected = pii(batch, PiiArgs())
    assert list(kept.columns) == ["id", "text", "pii_counts"]
    assert kept.loc[0, "pii_counts"] == "{}"
    assert rejected.empty
