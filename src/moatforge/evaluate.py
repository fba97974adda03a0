"""Tool-call accuracy of a model on held-out conversations: batched greedy generation, then AST scoring.

Each eval row is a conversation whose last message is the reference assistant turn; the model sees
everything before it and must produce the same calls (or a text answer where no tool applies).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from moatforge import storage
from moatforge.chat_template import ParsedOutput, parse_assistant_output
from moatforge.data import BadRow, collate, encode_example, generation_prompt, normalize_row, render
from moatforge.errors import MoatforgeError
from moatforge.toolcall_scoring import calls_from_message, calls_match


def load_eval_rows(path: str, limit: int | None = None, what: str = "eval data") -> list[dict]:
    text = storage.read_text(path)
    if text is None:
        raise MoatforgeError(f"{what} {path} does not exist or cannot be read")
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise MoatforgeError(f"{what} {path}: line {n} is not valid JSON") from None
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages or messages[-1].get("role") != "assistant":
            raise MoatforgeError(f"{what} {path}: line {n} must be a conversation ending in an assistant turn")
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise MoatforgeError(f"{what} {path} has no rows")
    return rows


# Room beyond the longest reference: a right answer may spell its JSON with a little more whitespace.
ANSWER_SLACK_TOKENS = 16


def answer_token_budget(tokenizer, rows: list[dict]) -> int:
    """New tokens enough for the longest reference answer, plus slack.

    A fixed cap silently scores every answer longer than it as wrong: two parallel calls take ~85 tokens, so
    the 64-token cap the demo once used failed every parallel-call row whatever the model wrote.
    """
    longest = 0
    for row in rows:
        prompt = generation_prompt(tokenizer, row["messages"], row.get("tools"))
        norm = normalize_row({"messages": row["messages"], "tools": row.get("tools")})
        full = render(tokenizer, norm["messages"], norm["tools"])
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        longest = max(longest, len(tokenizer(full, add_special_tokens=False)["input_ids"]) - n_prompt)
    return longest + ANSWER_SLACK_TOKENS


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int):
    """Greedy batched generation; returns texts, generated token counts, per-prompt latency, total time."""
    import torch

    tokenizer.padding_side = "left"
    stop_ids = [tokenizer.eos_token_id]
    texts: list[str] = [""] * len(prompts)
    counts = [0] * len(prompts)
    latency = [0.0] * len(prompts)
    total_time = 0.0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        dt = time.perf_counter() - t0
        total_time += dt
        new = out[:, enc["input_ids"].shape[1] :]
        for row, i in enumerate(idx):
            tokens = new[row]
            valid = tokens[tokens != tokenizer.pad_token_id]
            counts[i] = int(valid.numel()) + 1 if valid.numel() < tokens.numel() else int(tokens.numel())
            texts[i] = tokenizer.decode(valid, skip_special_tokens=True)
            latency[i] = dt
    return texts, counts, latency, total_time


def reference_loss(model, tokenizer, rows: list[dict], batch_size: int, max_seq_len: int = 2048) -> float | None:
    """Mean token loss of the model on the reference assistant turns (teacher forcing)."""
    import torch

    from moatforge.train.loop import count_targets, forward_loss_sum

    encoded = []
    for row in rows:
        try:
            encoded.append(encode_example(tokenizer, row, max_seq_len, overlong="truncate"))
        except BadRow:
            continue
    loss_sum, targets = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            b = collate([e.input_ids for e in chunk], [e.labels for e in chunk], tokenizer.pad_token_id)
            loss_sum += float(forward_loss_sum(model, b, "cpu"))
            targets += count_targets(b)
    return loss_sum / targets if targets else None


def parse_prediction(prediction: str | dict) -> ParsedOutput:
    """A prediction is generated text, or an OpenAI assistant message (as an API returns it)."""
    if isinstance(prediction, str):
        return parse_assistant_output(prediction)
    if "tool_calls" in prediction or "role" in prediction:
        content = prediction.get("content") or ""
        parsed = parse_assistant_output(content)  # a model may also put calls inline in its text
        calls = calls_from_message(prediction) + parsed.tool_calls
        bad = next((c for c in calls if not isinstance(c["arguments"], dict)), None)
        error = parsed.error or (f"tool call {bad['name']!r} has arguments that are not a JSON object" if bad else None)
        return ParsedOutput(content=parsed.content, tool_calls=calls, error=error)
    return parse_assistant_output(str(prediction.get("output", prediction.get("text", ""))))


def score(rows: list[dict], predictions: list[str | dict]) -> dict:
    correct, unparseable, reasons, verdicts = 0, 0, {}, []
    for row, prediction in zip(rows, predictions, strict=True):
        parsed = parse_prediction(prediction)
        if parsed.error:
            unparseable += 1
        ok, reason = calls_match(parsed.tool_calls, calls_from_message(row["messages"][-1]), row.get("tools"))
        if parsed.error and ok:
            ok, reason = False, parsed.error
        correct += ok
        verdicts.append({"correct": bool(ok), "reason": None if ok else reason})
        if not ok:
            reasons[reason] = reasons.get(reason, 0) + 1
    n = len(rows)
    return {
        "n": n,
        "correct": correct,
        "tool_call_accuracy": correct / n,
        "unparseable_rate": unparseable / n,
        "failure_reasons": reasons,
        # One verdict per row, in row order: which rows a model fails, to compare two models row by row.
        "samples": verdicts,
    }


def evaluate_model(
    model_dir: str | Path,
    rows: list[dict],
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    with_loss: bool = True,
) -> dict:
    from moatforge.models import count_params, load_model, load_tokenizer, row_major_output_head

    tokenizer = load_tokenizer(model_dir)
    model = row_major_output_head(load_model(model_dir).eval())
    prompts = [generation_prompt(tokenizer, r["messages"], r.get("tools")) for r in rows]
    if max_new_tokens is None:
        max_new_tokens = answer_token_budget(tokenizer, rows)
    texts, counts, latency, gen_time = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    result = score(rows, texts)
    for sample, text, count in zip(result["samples"], texts, counts, strict=True):
        sample.update({"output": text, "tokens": count})
    result.update(
        {
            "max_new_tokens": max_new_tokens,
            # Outputs cut off by the budget: a high rate means the budget, not the model, failed those rows.
            "truncated_rate": sum(c >= max_new_tokens for c in counts) / len(counts),
            "loss": reference_loss(model, tokenizer, rows, batch_size) if with_loss else None,
            "latency_s_mean": sum(latency) / len(latency),
            "tokens_per_s": sum(counts) / gen_time if gen_time > 0 else 0.0,
            "generated_tokens": sum(counts),
            "params": count_params(model),
            "model_path": str(model_dir),
        }
    )
    return result


def load_predictions(path: str, n_rows: int) -> list[str | dict]:
    """One assistant output per eval row: a JSON string, ``{"output": text}`` or an OpenAI message object."""
    text = storage.read_text(path)
    if text is None:
        raise MoatforgeError(f"predictions file {path} does not exist or cannot be read")
    predictions = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise MoatforgeError(
                f"predictions {path}: line {n} is not JSON; write one JSON string or object per line"
            ) from None
        if not isinstance(value, str | dict):
            raise MoatforgeError(f"predictions {path}: line {n} must be a JSON string or object")
        predictions.append(value)
    if len(predictions) != n_rows:
        raise MoatforgeError(
            f"predictions {path} has {len(predictions)} outputs for {n_rows} eval rows; write exactly one per row"
        )
    return predictions


def score_predictions(model_dir: str | Path | None, rows: list[dict], predictions: list, batch_size: int) -> dict:
    """Score given outputs; with a model, also its reference loss (nothing is generated, so no speed keys)."""
    result = score(rows, predictions)
    loss = None
    if model_dir is not None:
        from moatforge.models import load_model, load_tokenizer

        loss = reference_loss(load_model(model_dir).eval(), load_tokenizer(model_dir), rows, batch_size)
    result.update({"loss": loss, "latency_s_mean": None, "tokens_per_s": None, "model_path": str(model_dir or "")})
    return result


def run_eval(
    model_ref: str | None,
    data: str,
    out: str | None = None,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    predictions: str | None = None,
):
    from moatforge.models import resolve_model

    if model_ref is None and predictions is None:
        raise MoatforgeError("eval needs --model REF (to generate) or --predictions FILE (to score given outputs)")
    rows = load_eval_rows(data, limit)
    model_dir = resolve_model(model_ref) if model_ref else None
    if predictions:
        result = score_predictions(model_dir, rows, load_predictions(predictions, len(rows)), batch_size)
    else:
        result = evaluate_model(model_dir, rows, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if out:
        storage.write_text(out, json.dumps(result, indent=2) + "\n")
    return json.dumps({k: result[k] for k in ("n", "tool_call_accuracy", "unparseable_rate", "loss", "tokens_per_s")})
