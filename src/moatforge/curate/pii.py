"""Regex PII and secret redaction for text, chat contents and tool-call arguments.

Redaction replaces a match with a typed placeholder (``<EMAIL>``, ``<PHONE>``, ``<IP_ADDRESS>``,
``<CREDIT_CARD>``, ``<SECRET>``) rather than dropping the row: a fine-tune should still learn that a
ticket mentions an e-mail address, just not whose. Patterns are deliberately conservative where a false
positive would damage training data (order ids, dates, version strings, private network addresses), and
each candidate that can be checked is checked: card numbers by the Luhn sum and issuer prefix, IP
addresses by ``ipaddress`` (only globally routable ones are personal data; 10.x or 127.0.0.1 are not).

Secrets run first so that a token that happens to contain an e-mail-like or digit-heavy fragment is
replaced whole; cards run before phones so that a 16-digit card is never half-eaten as a phone number.
Known gaps: names and street addresses (need an NER model), numbers stored as JSON numbers rather than
strings, and unformatted 10-digit phone numbers (indistinguishable from ids).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Collection

import pandas as pd
from pydantic import BaseModel, ConfigDict

from moatforge.curate.text_utils import is_missing, parse_messages, rows_of, split_batch, to_py

__all__ = ["PII_KINDS", "PiiArgs", "pii", "redact", "redact_value"]

PII_KINDS = ("secret", "email", "credit_card", "ip_address", "phone")
PLACEHOLDERS = {
    "secret": "<SECRET>",
    "email": "<EMAIL>",
    "credit_card": "<CREDIT_CARD>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}

_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.S)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_GITHUB_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")
_SLACK_TOKEN = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")
_SK_API_KEY = re.compile(r"\bsk-(?:[a-z]+-)?[A-Za-z0-9_-]{20,}")
_BEARER = re.compile(r"\b(Bearer|bearer|BEARER)(\s+)([A-Za-z0-9\-._~+/]{8,}=*)")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Only the first group may follow without a separator: optional separators between every group would
# let a long digit run split in exponentially many ways before the match fails.
_PHONE_INTL = re.compile(
    r"(?<![\w+])\+(?:\d{7,15}|\d{1,3}(?:[ .-]?\(\d{1,4}\))?[ .-]?\d{1,8}(?:[ .-]\d{1,8}){0,5})(?![\w-])"
)
_PHONE_US = re.compile(r"(?<![\w+\-.])(?:1[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    """Issuer ranges (Amex/Diners/JCB 3, Visa 4, Mastercard 5 and 2221-2720, Discover/UnionPay 6).

    Without it one in ten long numbers (order ids, millisecond timestamps) would pass Luhn by chance.
    """
    return digits[0] in "3456" or (digits[0] == "2" and 2221 <= int(digits[:4]) <= 2720)


def _card(match: re.Match) -> str | None:
    digits = re.sub(r"\D", "", match.group())
    if 13 <= len(digits) <= 19 and _card_prefix_ok(digits) and _luhn_ok(digits):
        return PLACEHOLDERS["credit_card"]
    return None


def _ip(match: re.Match) -> str | None:
    try:
        address = ipaddress.ip_address(match.group())
    except ValueError:
        return None
    if address.version == 6 and match.group().count(":") < 3:
        return None  # "1::2" is far more often a Python slice or a ratio than an address
    if address.is_global and not address.is_multicast:
        return PLACEHOLDERS["ip_address"]
    return None


def _phone(match: re.Match) -> str | None:
    n_digits = sum(ch.isdigit() for ch in match.group())
    return PLACEHOLDERS["phone"] if 7 <= n_digits <= 15 else None


def _bearer(match: re.Match) -> str | None:
    token = match.group(3)
    if any(ch.isdigit() for ch in token) or len(token) >= 32:  # "bearer instruments" is prose, not a header
        return f"{match.group(1)}{match.group(2)}{PLACEHOLDERS['secret']}"
    return None


def _always(kind: str) -> Callable[[re.Match], str]:
    return lambda _match: PLACEHOLDERS[kind]


_RULES: tuple[tuple[str, re.Pattern, Callable[[re.Match], str | None]], ...] = (
    ("secret", _PRIVATE_KEY, _always("secret")),
    ("secret", _AWS_KEY_ID, _always("secret")),
    ("secret", _GITHUB_TOKEN, _always("secret")),
    ("secret", _SLACK_TOKEN, _always("secret")),
    ("secret", _SK_API_KEY, _always("secret")),
    ("secret", _BEARER, _bearer),
    ("email", _EMAIL, _always("email")),
    ("credit_card", _CARD, _card),
    ("ip_address", _IPV4, _ip),
    ("ip_address", _IPV6, _ip),
    ("phone", _PHONE_INTL, _phone),
    ("phone", _PHONE_US, _phone),
)


def redact(text: str, *, kinds: Collection[str] | None = None) -> tuple[str, Counter]:
    """(redacted text, count of replacements per kind); ``kinds`` limits which of ``PII_KINDS`` are redacted."""
    counts: Counter = Counter()
    for kind, pattern, replace in _RULES:
        if kinds is not None and kind not in kinds:
            continue

        def _sub(match: re.Match, kind: str = kind, replace=replace) -> str:
            out = replace(match)
            if out is None:
                return match.group()
            counts[kind] += 1
            return out

        text = pattern.sub(_sub, text)
    return text, counts


def redact_value(value, counts: Counter, *, kinds: Collection[str] | None = None):
    """Redact every string inside parsed JSON, keeping keys and non-string values (and so the shape) intact."""
    if isinstance(value, str):
        new, found = redact(value, kinds=kinds)
        counts.update(found)
        return new
    if isinstance(value, list):
        return [redact_value(v, counts, kinds=kinds) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v, counts, kinds=kinds) for k, v in value.items()}
    return value


class PiiArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: bool = True
    email: bool = True
    credit_card: bool = True
    ip_address: bool = True
    phone: bool = True

    def kinds(self) -> frozenset[str]:
        return frozenset(k for k in PII_KINDS if getattr(self, k))


def _redact_arguments(args, counts: Counter, kinds: Collection[str]):
    """Arguments stay in their stored form; a JSON string is re-dumped only when something was redacted."""
    if isinstance(args, str):
        try:
            parsed = json.loads(args)
        except json.JSONDecodeError:
            new, found = redact(args, kinds=kinds)
            counts.update(found)
            return new
        found: Counter = Counter()
        redacted = redact_value(parsed, found, kinds=kinds)
        if not found:
            return args
        counts.update(found)
        return json.dumps(redacted, ensure_ascii=False)
    if isinstance(args, dict | list):
        return redact_value(args, counts, kinds=kinds)
    return args


def _redact_content(content, counts: Counter, kinds: Collection[str]):
    if isinstance(content, str):
        new, found = redact(content, kinds=kinds)
        counts.update(found)
        return new
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part = {**part, "text": _redact_content(part["text"], counts, kinds)}
            elif isinstance(part, str):
                part = _redact_content(part, counts, kinds)
            parts.append(part)
        return parts
    return content


def _redact_messages(messages: list[dict], counts: Counter, kinds: Collection[str]) -> list[dict]:
    out = []
    for message in messages:
        if "content" in message:
            message = {**message, "content": _redact_content(message["content"], counts, kinds)}
        else:
            message = dict(message)
        calls = message.get("tool_calls")
        if calls:
            new_calls = []
            for call in calls:
                if isinstance(call, dict):
                    nested = isinstance(call.get("function"), dict)
                    fn = call["function"] if nested else call
                    if "arguments" in fn:
                        fn = {**fn, "arguments": _redact_arguments(fn["arguments"], counts, kinds)}
                        call = {**call, "function": fn} if nested else fn
                new_calls.append(call)
            message["tool_calls"] = new_calls
        out.append(message)
    return out


def pii(batch: pd.DataFrame, args: PiiArgs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Redact PII in ``text``, message contents and tool-call arguments; never rejects a row.

    Adds ``pii_counts``, a JSON object string of replacements per kind (``"{}"`` when none), which the
    pipeline sums into the run manifest. Columns are only rewritten when a batch had something to redact.
    """
    kinds = args.kinds()
    texts, messages_out, all_counts = [], [], []
    text_changed = messages_changed = False
    for row in rows_of(batch):
        counts: Counter = Counter()
        text = row.get("text")
        if isinstance(text, str):
            new_text, found = redact(text, kinds=kinds)
            counts.update(found)
            text_changed = text_changed or bool(found)
            text = new_text
        texts.append(text)

        raw = row.get("messages")
        new_raw = raw if isinstance(raw, str) else to_py(raw)  # plain lists keep a rewritten column homogeneous
        if not is_missing(raw):
            before = sum(counts.values())
            try:
                redacted = _redact_messages(parse_messages(raw), counts, kinds)
                if sum(counts.values()) != before:
                    new_raw = json.dumps(redacted, ensure_ascii=False) if isinstance(raw, str) else redacted
                    messages_changed = True
            except ValueError:
                if isinstance(raw, str):  # unparseable JSON is still text that may hold PII
                    new_raw, found = redact(raw, kinds=kinds)
                    counts.update(found)
                    messages_changed = messages_changed or bool(found)
        messages_out.append(new_raw)
        all_counts.append(json.dumps(dict(sorted(counts.items()))))

    replace: dict[str, list] = {"pii_counts": all_counts}
    if text_changed:
        replace["text"] = texts
    if messages_changed:
        replace["messages"] = messages_out
    return split_batch(batch, [None] * len(batch), "pii", replace=replace, new_column_dtypes={"pii_counts": str})
