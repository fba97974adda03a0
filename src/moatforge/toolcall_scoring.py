"""Exact scoring of predicted tool calls, following the Berkeley Function Calling Leaderboard's AST checker.

Comparing parsed calls rather than generated text makes the metric insensitive to argument order,
whitespace and JSON formatting, while still failing a call whose name, argument set, types or
values would make the real tool do something other than what the reference intends.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["calls_from_message", "calls_match", "score_rows"]

_NUM_TOL = 1e-6


def calls_from_message(message: dict) -> list[dict]:
    """Convert an OpenAI-format assistant message to the `{"name", "arguments"}` form scored here.

    Arguments that are not valid JSON are kept as the raw string, so that `calls_match` reports the
    call as malformed instead of the conversion raising mid-evaluation.
    """
    calls = []
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function", tc)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            with contextlib.suppress(json.JSONDecodeError):
                args = json.loads(args)
        calls.append({"name": fn.get("name"), "arguments": args})
    return calls


def _schemas(tools: Sequence[dict] | None) -> dict[str, dict] | None:
    if tools is None:
        return None
    out = {}
    for tool in tools:
        fn = tool.get("function", tool)
        out[fn["name"]] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_ok(value: object, json_type: str | list[str] | None) -> bool:
    if json_type is None:
        return True
    if isinstance(json_type, list):
        return any(_type_ok(value, t) for t in json_type)
    checks = {
        "string": lambda v: isinstance(v, str),
        # bool is a subclass of int in Python, but a model writing `true` for a count is wrong.
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": _is_number,
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    check = checks.get(json_type)
    return True if check is None else check(value)


def _same_kind(pred: object, ref: object) -> bool:
    """Type agreement with the reference value, for when no schema says what the type should be."""
    if isinstance(ref, bool) or isinstance(pred, bool):
        return isinstance(ref, bool) and isinstance(pred, bool)
    if _is_number(ref):
        return _is_number(pred)
    if ref is None:
        return pred is None
    return isinstance(pred, type(ref))


def _values_equal(pred: object, ref: object) -> bool:
    if isinstance(ref, bool) or isinstance(pred, bool):
        return isinstance(ref, bool) and isinstance(pred, bool) and pred == ref
    if _is_number(ref) and _is_number(pred):
        return math.isclose(float(pred), float(ref), rel_tol=0.0, abs_tol=_NUM_TOL)
    if isinstance(ref, str) and isinstance(pred, str):
        return pred.strip().casefold() == ref.strip().casefold()
    if isinstance(ref, list) and isinstance(pred, list):
        return len(ref) == len(pred) and all(_values_equal(p, r) for p, r in zip(pred, ref, strict=True))
    if isinstance(ref, dict) and isinstance(pred, dict):
        return ref.keys() == pred.keys() and all(_values_equal(pred[k], ref[k]) for k in ref)
    return pred == ref


def _check_call(pred: dict, ref: dict, schemas: dict[str, dict] | None) -> str:
    """Return "" when `pred` is an acceptable rendering of `ref`, else the first reason it is not."""
    name, args = pred.get("name"), pred.get("arguments")
    if not isinstance(name, str) or not isinstance(args, dict):
        return "malformed call"
    if name.strip() != str(ref["name"]).strip():
        return "wrong function name"
    ref_args = ref.get("arguments") or {}
    schema = schemas.get(ref["name"]) if schemas is not None else None
    if schema is not None:
        props = schema.get("properties") or {}
        for key in args:
            if key not in props:
                return f"unknown argument '{key}'"
        for key in schema.get("required") or []:
            if key not in args:
                return f"missing required argument '{key}'"
        for key, value in args.items():
            spec = props[key]
            if not _type_ok(value, spec.get("type")):
                return f"wrong type for '{key}'"
            if "enum" in spec and not any(_values_equal(value, e) for e in spec["enum"]):
                return f"wrong value for '{key}'"
    for key in ref_args:
        if key not in args:
            return f"missing argument '{key}'"
    for key in args:
        if key not in ref_args:
            return f"unexpected argument '{key}'"
    for key, ref_value in ref_args.items():
        if schema is None and not _same_kind(args[key], ref_value):
            return f"wrong type for '{key}'"
        if not _values_equal(args[key], ref_value):
            return f"wrong value for '{key}'"
    return ""


def _max_matching(ok: list[list[bool]]) -> list[int | None]:
    """Kuhn's augmenting paths; returns, for each reference, the index of its matched prediction."""
    n_ref, n_pred = len(ok), len(ok[0]) if ok else 0
    pred_owner: list[int | None] = [None] * n_pred

    def augment(r: int, seen: set[int]) -> bool:
        for p in range(n_pred):
            if ok[r][p] and p not in seen:
                seen.add(p)
                owner = pred_owner[p]
                if owner is None or augment(owner, seen):
                    pred_owner[p] = r
                    return True
        return False

    for r in range(n_ref):
        augment(r, set())
    ref_match: list[int | None] = [None] * n_ref
    for p, r in enumerate(pred_owner):
        if r is not None:
            ref_match[r] = p
    return ref_match


def calls_match(predicted: list[dict], reference: list[dict], tools: list[dict] | None = None) -> tuple[bool, str]:
    """Whether `predicted` does what `reference` does; parallel calls may come in any order.

    An empty `reference` means the right answer is plain text, so only an empty prediction passes.
    """
    if not reference:
        return (True, "") if not predicted else (False, "expected a text answer, got a tool call")
    if not predicted:
        return False, "expected a tool call, got none"
    if len(predicted) != len(reference):
        return False, "wrong number of calls"
    schemas = _schemas(tools)
    reasons = [[_check_call(p, r, schemas) for p in predicted] for r in reference]
    matching = _max_matching([[reason == "" for reason in row] for row in reasons])
    if all(m is not None for m in matching):
        return True, ""
    # Explain the first unmatched reference call using the unmatched prediction that resembles it most.
    used = {m for m in matching if m is not None}
    r = next(i for i, m in enumerate(matching) if m is None)
    free = [p for p in range(len(predicted)) if p not in used]
    same_name = [p for p in free if reasons[r][p] != "wrong function name"]
    return False, reasons[r][(same_name or free)[0]]


def score_rows(
    predictions: list[list[dict]],
    references: list[list[dict]],
    tools_per_row: Sequence[list[dict] | None] | None = None,
) -> dict:
    """Aggregate `calls_match` over rows; `reasons` counts why rows failed, to show what to fix next."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if tools_per_row is None:
        tools_per_row = [None] * len(references)
    elif len(tools_per_row) != len(references):
        raise ValueError(f"{len(tools_per_row)} tool lists for {len(references)} references")
    correct, reasons = 0, Counter()
    for pred, ref, tools in zip(predictions, references, tools_per_row, strict=True):
        ok, reason = calls_match(pred, ref, tools)
        correct += ok
        if not ok:
            reasons[reason] += 1
    n = len(references)
    return {
        "n": n,
        "correct": correct,
        "tool_call_accuracy": correct / n if n else 0.0,
        "reasons": dict(reasons),
    }
