"""A wider transfer set for distillation: reworded requests, answered by the teacher.

A small student copies its teacher on the inputs it is trained on and drifts on anything worded otherwise: the
12-layer SmolLM2 student learnt its training rows almost exactly (loss ~0.01) yet answered held-out requests
phrased in unseen words with calls the teacher never makes. TinyBERT (Jiao et al. 2020) widens the transfer
set by swapping words for ones a language model predicts in their place; here the teacher itself is that
language model, and its greedy answer to each reworded request becomes the reference (sequence-level KD, Kim
& Rush 2016), so the student learns what the teacher does on inputs no data set row spells out.

Written here rather than taken from nlpaug or TextAttack: those need a masked LM or word vectors from a hub,
and this machine reaches none; the teacher, already on disk, predicts words as well for this purpose. Ids,
numbers, all-caps codes and quoted strings are never swapped, so a reworded request still names the same
records.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass

from moatforge import storage
from moatforge.errors import MoatforgeError

# A swappable word: letters only, not glued to a hyphen or digit (ORD-123, PN-3978), not all capitals.
_WORD_RE = re.compile(r"(?<![\w-])[A-Za-z]{3,}(?![\w-])")
_QUOTED_RE = re.compile(r"\"[^\"]*\"|'[^'\s][^']*'(?!\w)")
_PREDICTION_POOL = 20


@dataclass
class AugmentSummary:
    rows_in: int
    rows_out: int
    words_swapped: int
    no_swappable_word: int
    unparseable_answers: int
    truncated_answers: int


def swappable_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of words that may be replaced: outside quotes, not codes, not ids."""
    quoted = [m.span() for m in _QUOTED_RE.finditer(text)]
    spans = []
    for m in _WORD_RE.finditer(text):
        start, end = m.span()
        if m.group().isupper() or any(a <= start < b for a, b in quoted):
            continue
        spans.append((start, end))
    return spans


def reword(text: str, tokenizer, next_token_logprobs, rate: float, rng: random.Random) -> tuple[str, int]:
    """Replace about ``rate`` of the swappable one-token words with words the language model predicts there.

    ``next_token_logprobs(ids)`` returns a [len(ids), vocab] tensor of log-probabilities of the next token.
    At least one word is swapped when any can be; returns the new text and the number of words swapped.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    spans = set(swappable_spans(text))
    positions = [
        i for i in range(1, len(ids)) if _word_span(text, offsets[i]) in spans and _whole_word(text, offsets, i)
    ]
    if not positions:
        return text, 0
    chosen = [i for i in positions if rng.random() < rate] or [rng.choice(positions)]
    logprobs = next_token_logprobs(ids)
    replacements: dict[tuple[int, int], str] = {}
    for i in chosen:
        word = _sample_word(tokenizer, logprobs[i - 1], ids[i], rng)
        if word is not None:
            replacements[_word_span(text, offsets[i])] = word
    out = text
    for (start, end), word in sorted(replacements.items(), reverse=True):
        out = out[:start] + word + out[end:]
    return out, len(replacements)


def _word_span(text: str, offset: tuple[int, int]) -> tuple[int, int]:
    start, end = offset
    while start < end and text[start].isspace():  # byte-level BPE folds the leading space into the token
        start += 1
    return start, end


def _whole_word(text: str, offsets: list, i: int) -> bool:
    """True when token i is a word by itself: the next token starts a new word (or there is none)."""
    end = offsets[i][1]
    return end >= len(text) or not text[end].isalnum()


def _sample_word(tokenizer, logprobs, original_id: int, rng: random.Random) -> str | None:
    """A predicted whole word other than the original, drawn in proportion to its probability."""
    import torch

    top = torch.topk(logprobs, _PREDICTION_POOL)
    words, weights = [], []
    for lp, tid in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        piece = tokenizer.decode([tid])
        word = piece.strip()
        if tid == original_id or not piece.startswith(" ") or not word.isalpha() or len(word) < 2:
            continue
        words.append(word)
        weights.append(math.exp(lp))
    if not words:
        return None
    return rng.choices(words, weights=weights)[0]


def _lm_scorer(model):
    import torch

    def next_token_logprobs(ids: list[int]):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        return torch.log_softmax(logits.float(), dim=-1)

    return next_token_logprobs


def _answer_message(text: str) -> dict | None:
    """The teacher's generated turn as a data-set assistant message; None when its tool call is malformed."""
    from moatforge.chat_template import parse_assistant_output
    from moatforge.serve.openai_schema import openai_tool_calls

    parsed = parse_assistant_output(text)
    if parsed.error:
        return None
    if not parsed.tool_calls:
        return {"role": "assistant", "content": parsed.content}
    return {"role": "assistant", "content": parsed.content or None, "tool_calls": openai_tool_calls(parsed.tool_calls)}


def reworded_rows(rows: list[dict], tokenizer, scorer, variants: int, rate: float, seed: int):
    """Each row ``variants`` times with its user turns reworded; the final assistant turn is left to answer."""
    rng = random.Random(seed)
    out, swapped, skipped = [], 0, 0
    for index, row in enumerate(rows):
        for _ in range(variants):
            messages, n_swapped = [], 0
            for message in row["messages"]:
                if message.get("role") == "user" and isinstance(message.get("content"), str):
                    content, n = reword(message["content"], tokenizer, scorer, rate, rng)
                    message = {**message, "content": content}
                    n_swapped += n
                messages.append(message)
            if n_swapped == 0:
                skipped += 1
                continue
            swapped += n_swapped
            out.append({**row, "messages": messages, "augmented_from": index})
    return out, swapped, skipped


def run_augment(
    teacher: str,
    data: str,
    out: str,
    variants: int = 1,
    rate: float = 0.2,
    seed: int = 0,
    batch_size: int = 12,
    limit: int | None = None,
) -> AugmentSummary:
    """Write ``out`` (JSONL): reworded copies of ``data``'s rows whose final turn is the teacher's answer."""
    from moatforge.data import generation_prompt
    from moatforge.evaluate import answer_token_budget, generate, load_eval_rows
    from moatforge.models import load_model, load_tokenizer, resolve_model, row_major_output_head

    if variants < 1:
        raise MoatforgeError(f"--variants must be at least 1, got {variants}")
    if not 0 < rate <= 1:
        raise MoatforgeError(f"--swap-rate must be in (0, 1], got {rate}")
    rows = load_eval_rows(data, limit=limit, what="data to reword")
    model_dir = resolve_model(teacher)
    tokenizer = load_tokenizer(model_dir)
    model = row_major_output_head(load_model(model_dir).eval())
    candidates, swapped, skipped = reworded_rows(rows, tokenizer, _lm_scorer(model), variants, rate, seed)
    prompts = [generation_prompt(tokenizer, r["messages"], r.get("tools")) for r in candidates]
    budget = answer_token_budget(tokenizer, rows)
    texts, counts, *_ = generate(model, tokenizer, prompts, budget, batch_size)
    written, unparseable, truncated = [], 0, 0
    for row, text, count in zip(candidates, texts, counts, strict=True):
        if count >= budget:  # stopped by the budget, not by the teacher: a cut-off answer is no reference
            truncated += 1
        elif (answer := _answer_message(text)) is None:
            unparseable += 1
        else:
            written.append({**row, "messages": row["messages"][:-1] + [answer]})
    storage.write_text(out, "".join(json.dumps(r) + "\n" for r in written))
    return AugmentSummary(len(rows), len(written), swapped, skipped, unparseable, truncated)
