"""Row access, text normalisation, exact-dedup hashing and the kept/rejected split shared by every step.

Batches reach the steps in whatever shape Ray Data's Arrow-to-pandas conversion produced: list columns
arrive as numpy object arrays (nested ones too), missing values as ``None`` or ``NaN``, and a ``messages``
column may also hold a JSON string when the reader kept it as text. The helpers here absorb those
differences once, so the steps can treat a row as plain Python data.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "content_hash",
    "content_text",
    "is_chat_row",
    "is_missing",
    "normalize_text",
    "parse_messages",
    "parse_tools",
    "pick_representative",
    "row_text",
    "rows_of",
    "split_batch",
    "to_py",
    "tool_call_arguments",
    "words",
]

ROW_COLUMNS = ("text", "messages", "tools")

# \r and the Unicode line separators become \n before control characters are stripped, so a CRLF file
# keeps its lines; \x85 (NEL) sits inside the C1 control range and must be handled first for the same reason.
_LINE_BREAKS = re.compile("\r\n?|[\u2028\u2029\x85]")
# C0/C1 controls except \t and \n, plus the invisible characters that break word matching (zero-width
# space, word joiner, BOM). ZWJ/ZWNJ are kept: emoji sequences and Persian/Indic spelling need them.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2060\ufeff]")
_UNICODE_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_INNER_RUN = re.compile(r"(?<=[^ \t\n])[ \t]{2,}(?=[^ \t\n])")
_ANY_RUN = re.compile(r"[ \t]{2,}")
_WORD = re.compile(r"\w+")
_ASCII_NON_WORD = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_")})


def is_missing(value: Any) -> bool:
    """True for the three ways pandas/Arrow spell "no value" in an object column (None, NaN, pd.NA)."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def to_py(value: Any, *, drop_none: bool = False) -> Any:
    """Plain Python lists/dicts/scalars from Arrow-converted values.

    ``drop_none`` removes ``None``-valued dict keys: Arrow gives every struct in a column the union of all
    keys, so a tool schema read through Ray Data grows ``"enum": None`` and friends that JSON Schema rejects.
    """
    if isinstance(value, dict):
        return {k: to_py(v, drop_none=drop_none) for k, v in value.items() if not (drop_none and v is None)}
    if isinstance(value, np.ndarray | list | tuple):
        return [to_py(v, drop_none=drop_none) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def parse_messages(value: Any) -> list[dict] | None:
    """The row's messages as a list of dicts, ``None`` when the row has none; raises ValueError if malformed."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        value = json.loads(value)
    value = to_py(value)
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise ValueError("messages is not a list of objects")
    return value


def parse_tools(value: Any) -> list[dict] | None:
    """The row's tool definitions without Arrow's ``None`` padding; raises ValueError if malformed."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        value = json.loads(value)
    value = to_py(value, drop_none=True)
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError("tools is not a list of objects")
    return value


def is_chat_row(row: Mapping[str, Any]) -> bool:
    """``messages`` wins over ``text`` when both are present, matching ``moatforge.data.normalize_row``."""
    return not is_missing(row.get("messages"))


def content_text(content: Any) -> str:
    """Message content as one string; OpenAI multi-part content contributes its text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple | np.ndarray):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def tool_call_arguments(call: Any) -> str:
    """A tool call's arguments as the JSON string OpenAI puts on the wire, whichever form the row stored."""
    if not isinstance(call, dict):
        return ""
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    args = fn.get("arguments")
    if isinstance(args, str):
        return args
    if args is None:
        return ""
    return json.dumps(to_py(args), ensure_ascii=False)


def row_text(
    row: Mapping[str, Any], *, include_tool_arguments: bool = True, roles: Collection[str] | None = None
) -> str:
    """The text a row is judged by: ``text``, or a chat row's message contents plus tool-call arguments.

    Tool-call arguments are included by default because they carry user data (addresses, queries) that
    dedup and decontamination must see; language guessing turns them off, and limits ``roles`` to skip
    tool results, since JSON keys are English whatever the conversation's language.
    A chat row whose ``messages`` string is not JSON is judged by that raw string rather than raising.
    """
    if is_chat_row(row):
        try:
            messages = parse_messages(row.get("messages")) or []
        except ValueError:
            raw = row.get("messages")
            return raw if isinstance(raw, str) else ""
        parts: list[str] = []
        for message in messages:
            if roles is not None and message.get("role") not in roles:
                continue
            text = content_text(message.get("content"))
            if text:
                parts.append(text)
            if include_tool_arguments:
                for call in message.get("tool_calls") or []:
                    args = tool_call_arguments(call)
                    if args:
                        parts.append(args)
        return "\n".join(parts)
    text = row.get("text")
    return text if isinstance(text, str) else ""


def normalize_text(text: str, *, keep_indentation: bool = True, form: str = "NFC") -> str:
    """Canonical spelling of ``text`` so that filters, hashes and n-grams see one form of each string.

    Interior runs of spaces/tabs collapse to one space, but with ``keep_indentation`` the leading
    whitespace of each line survives: collapsing it would corrupt the code and YAML that internal
    documents and tickets are full of. A single tab between words is left alone (it is often a column
    separator in pasted tables).
    """
    text = unicodedata.normalize(form, text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _UNICODE_SPACES.sub(" ", text)
    text = _TRAILING_SPACE.sub("", text)
    text = (_INNER_RUN if keep_indentation else _ANY_RUN).sub(" ", text)
    return text.strip()


def words(text: str) -> list[str]:
    """Lowercased word tokens with punctuation dropped; the unit for shingles, n-gram overlap and language.

    Pure-ASCII text (most of it) takes a fast path with the same result: ``\\w`` is ``[A-Za-z0-9_]`` there,
    so mapping every other character to a space and splitting is ``findall(r"\\w+")`` at twice the speed.
    """
    if text.isascii():
        return text.lower().translate(_ASCII_NON_WORD).split()
    return _WORD.findall(unicodedata.normalize("NFC", text).casefold())


def content_hash(text: str) -> str:
    """Exact-dedup key: equal after normalisation, case folding and whitespace collapsing means duplicate.

    blake2b-128 is used because collisions must stay negligible across billions of rows while the key
    stays short enough to shuffle cheaply in a groupby.
    """
    canonical = " ".join(normalize_text(text).casefold().split())
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).hexdigest()


def pick_representative(ids: Iterable[str]) -> str:
    """The id kept from a duplicate group; the smallest id, so reruns and any partitioning agree."""
    return min(ids)


def rows_of(batch: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per row holding only the columns the steps read, without copying the other columns."""
    columns = {c: batch[c].tolist() for c in ROW_COLUMNS if c in batch.columns}
    if not columns:
        return [{} for _ in range(len(batch))]
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def split_batch(
    batch: pd.DataFrame,
    reasons: Sequence[str | None],
    step: str,
    replace: Mapping[str, Sequence[Any]] | None = None,
    new_column_dtypes: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a batch into kept rows (``reason is None``) and rejected rows tagged with ``step`` and ``reason``.

    ``replace`` holds full-length replacement columns for the kept side (modified text, added columns);
    rejected rows keep their original values, because the audit trail should show what was dropped,
    not what a half-applied step turned it into.
    """
    if len(reasons) != len(batch):
        raise ValueError(f"{step}: {len(reasons)} reasons for {len(batch)} rows")
    mask = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
    out = batch
    if replace:
        out = batch.copy(deep=False)
        dtypes = dict(new_column_dtypes or {})
        for column, values in replace.items():
            dtype = batch[column].dtype if column in batch.columns else dtypes.get(column, object)
            out[column] = pd.Series(list(values), index=batch.index, dtype=dtype)
    kept = out.loc[mask].reset_index(drop=True)
    rejected = batch.loc[~mask].reset_index(drop=True)
    rejected_reasons = [r for r in reasons if r is not None]
    rejected["step"] = pd.Series([step] * len(rejected_reasons), dtype=str)
    rejected["reason"] = pd.Series(rejected_reasons, dtype=str)
    return kept, rejected
