"""Web-document quality heuristics (Gopher, C4, FineWeb), applied to ``text`` rows only.

Sources of the rules and default thresholds:

- Gopher quality and repetition: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights
  from Training Gopher", appendix A.1.1 and table A1, as implemented by datatrove's ``GopherQualityFilter``
  and ``GopherRepetitionFilter`` (whose default values these are).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer", section 2.2, plus the policy-line and long-word rules of TFDS ``c4_utils``, as in
  datatrove's ``C4QualityFilter``.
- FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.3 (custom filters), datatrove's
  ``FineWebQualityFilter`` defaults.

Chat rows (conversations, tool-call logs) pass through untouched: these rules were tuned on web pages,
and a three-turn tool call has neither 50 words nor five sentences. Short *text* rows such as tickets are
judged like documents, so they do fall to ``gopher_short_doc`` / ``c4_too_few_sentences``; turn the groups
off (or lower ``min_doc_words`` / ``c4_min_num_sentences``) for corpora of short records.

Each rule's threshold can be set to ``None`` to turn just that rule off; the four group switches turn a
whole family off. Rules run in FineWeb's order (repetition, quality, C4, FineWeb) and a row is dropped
for the first rule it fails, which is the reason recorded. C4 is a line filter in the original: with
``c4_remove_lines=True`` the offending lines are deleted from kept documents (C4 semantics, and FineWeb's
rules then judge the shortened text); by default the C4 rules only decide whether to drop a document, so
the step never rewrites text unless asked to.

Differences from datatrove, all deliberate: words are regex tokens (``\\w+`` with inner apostrophes)
rather than NLTK's, so no tokenizer models are needed; stop words are matched case-insensitively; bullet
and ellipsis line ratios ignore blank lines; the top n-gram rule only counts an n-gram that occurs more
than once; ``min_alpha_words_ratio`` is datatrove's misnamed ``max_non_alpha_words_ratio``; and the
stop-word reason is ``gopher_few_stop_words`` (datatrove says ``gopher_enough_stop_words``).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from moatforge.curate.text_utils import is_chat_row, rows_of, split_batch

__all__ = [
    "QualityArgs",
    "c4_check",
    "fineweb_check",
    "gopher_quality_check",
    "gopher_repetition_check",
    "quality",
    "quality_check",
]

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
# Sentence-final marks across the scripts we expect in company data, plus closing quotes after them.
FINEWEB_TERMINAL_PUNCTUATION = (".", "!", "?", "…", "。", "！", "？", "؟", "۔", "।", "॥", '"', "'", "”", "’", "»")

_WORD = re.compile(r"\w+(?:['’]\w+)*")
_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_BULLETS = ("•", "-", "*", "‣", "◦", "▪")


class QualityArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gopher_repetition: bool = True
    gopher_quality: bool = True
    c4: bool = True
    fineweb: bool = True

    # Gopher quality
    min_doc_words: int | None = Field(50, ge=0)
    max_doc_words: int | None = Field(100_000, ge=1)
    min_avg_word_length: float | None = Field(3, ge=0)
    max_avg_word_length: float | None = Field(10, ge=0)
    max_symbol_word_ratio: float | None = Field(0.1, ge=0)
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1)
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1)
    min_alpha_words_ratio: float | None = Field(0.8, ge=0, le=1)
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: list[str] = Field(default_factory=lambda: list(GOPHER_STOP_WORDS))

    # Gopher repetition
    dup_para_frac: float | None = Field(0.3, ge=0, le=1)
    dup_para_char_frac: float | None = Field(0.2, ge=0, le=1)
    dup_line_frac: float | None = Field(0.3, ge=0, le=1)
    dup_line_char_frac: float | None = Field(0.2, ge=0, le=1)
    top_n_gram_char_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_n_gram_char_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )

    # C4
    c4_remove_lines: bool = False
    c4_min_num_sentences: int | None = Field(5, ge=0)
    c4_min_words_per_line: int | None = Field(3, ge=0)
    c4_max_word_length: int | None = Field(1000, ge=1)
    c4_remove_citations: bool = True
    c4_filter_no_terminal_punct: bool = True
    c4_filter_lorem_ipsum: bool = True
    c4_filter_javascript: bool = True
    c4_filter_curly_bracket: bool = True
    c4_filter_policy: bool = True

    # FineWeb
    fineweb_line_punct_thr: float | None = Field(0.12, ge=0, le=1)
    fineweb_short_line_thr: float | None = Field(0.67, ge=0, le=1)
    fineweb_short_line_length: int = Field(30, ge=1)
    fineweb_char_duplicates_ratio: float | None = Field(0.01, ge=0, le=1)
    fineweb_new_line_ratio: float | None = Field(0.3, ge=0)


@functools.lru_cache(maxsize=2)
def _words(text: str) -> tuple[str, ...]:
    """Word tokens; cached for the last texts, as the repetition and quality rules tokenize the same text."""
    return tuple(_WORD.findall(text))


def _find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, characters in them), counting every occurrence after the first."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


def _n_grams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """n-grams as tuples: hashing a tuple reuses its words' cached hashes, joining would build new strings."""
    return list(zip(*(tokens[i:] for i in range(n)), strict=False))


def _gram_chars(gram: tuple[str, ...]) -> int:
    """Characters of the n-gram joined by single spaces."""
    return sum(map(len, gram)) + len(gram) - 1


def _duplicated_n_gram_chars(tokens: Sequence[str], n: int) -> int:
    """Characters in repeated n-grams, skipping past each repeat so overlapping repeats are not double counted."""
    grams = _n_grams(tokens, n)
    if len(set(grams)) == len(grams):
        return 0
    seen: set[tuple[str, ...]] = set()
    chars = idx = 0
    while idx < len(grams):
        gram = grams[idx]
        if gram in seen:
            chars += _gram_chars(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return chars


def _nonblank_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def gopher_repetition_check(text: str, args: QualityArgs) -> str | None:
    """Reason the text fails Gopher's repetition rules (table A1), or None."""
    n_chars = len(text)
    if n_chars == 0:
        return None
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text.strip()) if p.strip()]
    dup_paras, dup_para_chars = _find_duplicates(paragraphs)
    if args.dup_para_frac is not None and paragraphs and dup_paras / len(paragraphs) > args.dup_para_frac:
        return "gopher_dup_para_frac"
    if args.dup_para_char_frac is not None and dup_para_chars / n_chars > args.dup_para_char_frac:
        return "gopher_dup_para_char_frac"

    lines = _nonblank_lines(text)
    dup_lines, dup_line_chars = _find_duplicates(lines)
    if args.dup_line_frac is not None and lines and dup_lines / len(lines) > args.dup_line_frac:
        return "gopher_dup_line_frac"
    if args.dup_line_char_frac is not None and dup_line_chars / n_chars > args.dup_line_char_frac:
        return "gopher_dup_line_char_frac"

    tokens = _words(text)
    for n, frac in sorted(args.top_n_gram_char_frac.items()):
        grams = _n_grams(tokens, n)
        if not grams:
            continue
        gram, count = Counter(grams).most_common(1)[0]
        if count > 1 and _gram_chars(gram) * count / n_chars > frac:
            return f"gopher_top_{n}_gram"
    # A repeated n-gram contains a repeated (n-1)-gram, and the count is 0 exactly when nothing repeats, so
    # once one n finds no repeats the longer ones cannot either (most documents stop at the first n).
    no_repeats_from: int | None = None
    for n, frac in sorted(args.dup_n_gram_char_frac.items()):
        chars = 0 if no_repeats_from is not None and n >= no_repeats_from else _duplicated_n_gram_chars(tokens, n)
        if chars == 0 and no_repeats_from is None:
            no_repeats_from = n
        if chars / n_chars > frac:
            return f"gopher_duplicated_{n}_n_grams"
    return None


def gopher_quality_check(text: str, args: QualityArgs) -> str | None:
    """Reason the text fails Gopher's quality rules (appendix A.1.1), or None."""
    tokens = _words(text)
    n_words = len(tokens)
    if args.min_doc_words is not None and n_words < args.min_doc_words:
        return "gopher_short_doc"
    if args.max_doc_words is not None and n_words > args.max_doc_words:
        return "gopher_long_doc"
    if n_words == 0:
        return "gopher_short_doc"

    avg_len = sum(map(len, tokens)) / n_words
    if args.min_avg_word_length is not None and avg_len < args.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if args.max_avg_word_length is not None and avg_len > args.max_avg_word_length:
        return "gopher_above_avg_threshold"

    if args.max_symbol_word_ratio is not None:
        if text.count("#") / n_words > args.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if (text.count("...") + text.count("…")) / n_words > args.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"

    lines = _nonblank_lines(text)
    if lines:
        if args.max_bullet_lines_ratio is not None:
            bullets = sum(line.lstrip().startswith(_BULLETS) for line in lines)
            if bullets / len(lines) > args.max_bullet_lines_ratio:
                return "gopher_too_many_bullets"
        if args.max_ellipsis_lines_ratio is not None:
            ellipses = sum(line.rstrip().endswith(("...", "…")) for line in lines)
            if ellipses / len(lines) > args.max_ellipsis_lines_ratio:
                return "gopher_too_many_end_ellipsis"

    if args.min_alpha_words_ratio is not None:
        alpha = sum(1 for w in tokens if w.isalpha() or any(c.isalpha() for c in w))
        if alpha / n_words < args.min_alpha_words_ratio:
            return "gopher_below_alpha_threshold"

    if args.min_stop_words is not None:
        stop = {w.casefold() for w in args.stop_words}
        found = 0
        for w in tokens:  # stop at the threshold: prose reaches it within a sentence
            if found >= args.min_stop_words:
                break
            found += w.casefold() in stop
        if found < args.min_stop_words:
            return "gopher_few_stop_words"
    return None


def _count_sentences(line: str) -> int:
    return max(1, len(_SENTENCE_END.findall(line)))


def c4_check(text: str, args: QualityArgs) -> tuple[str | None, str]:
    """(reason or None, text with C4's line removals applied); the caller decides whether to keep the rewrite."""
    kept_lines: list[str] = []
    sentences = 0
    for raw in text.splitlines():
        line = raw.strip()
        line_words = line.split()
        if args.c4_max_word_length is not None and any(len(w) > args.c4_max_word_length for w in line_words):
            continue
        if args.c4_remove_citations:
            line = _CITATION.sub("", line)
        if args.c4_filter_no_terminal_punct and (not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")):
            continue
        if args.c4_min_words_per_line is not None and len(line_words) < args.c4_min_words_per_line:
            continue
        lower = line.lower()
        if args.c4_filter_lorem_ipsum and "lorem ipsum" in lower:
            return "c4_lorem_ipsum", text
        if args.c4_filter_javascript and "javascript" in lower:
            continue
        if args.c4_filter_curly_bracket and "{" in line:
            return "c4_curly_bracket", text
        if args.c4_filter_policy and any(p in lower for p in C4_POLICY_SUBSTRINGS):
            continue
        sentences += _count_sentences(line)
        kept_lines.append(line)
    if args.c4_min_num_sentences is not None and sentences < args.c4_min_num_sentences:
        return "c4_too_few_sentences", text
    return None, "\n".join(kept_lines).strip()


def fineweb_check(text: str, args: QualityArgs) -> str | None:
    """Reason the text fails FineWeb's custom filters, or None."""
    lines = _nonblank_lines(text)
    if not lines:
        return "fineweb_empty"
    if args.fineweb_line_punct_thr is not None:
        ratio = sum(line.rstrip().endswith(FINEWEB_TERMINAL_PUNCTUATION) for line in lines) / len(lines)
        if ratio < args.fineweb_line_punct_thr:
            return "fineweb_line_punct_ratio"
    if args.fineweb_short_line_thr is not None:
        ratio = sum(len(line) < args.fineweb_short_line_length for line in lines) / len(lines)
        if ratio > args.fineweb_short_line_thr:
            return "fineweb_short_line_ratio"
    if args.fineweb_char_duplicates_ratio is not None:
        ratio = _find_duplicates(lines)[1] / max(1, len(text.replace("\n", "")))
        if ratio > args.fineweb_char_duplicates_ratio:
            return "fineweb_char_dup_ratio"
    if args.fineweb_new_line_ratio is not None:
        n_words = len(_words(text))
        if n_words == 0 or text.count("\n") / n_words > args.fineweb_new_line_ratio:
            return "fineweb_list_ratio"
    return None


def quality_check(text: str, args: QualityArgs) -> tuple[str | None, str]:
    """(first failing rule or None, text to keep); the text only changes with ``c4_remove_lines``."""
    if args.gopher_repetition and (reason := gopher_repetition_check(text, args)):
        return reason, text
    if args.gopher_quality and (reason := gopher_quality_check(text, args)):
        return reason, text
    if args.c4:
        reason, c4_text = c4_check(text, args)
        if reason:
            return reason, text
        if args.c4_remove_lines:
            text = c4_text
    if args.fineweb and (reason := fineweb_check(text, args)):
        return reason, text
    return None, text


def quality(batch: pd.DataFrame, args: QualityArgs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop text rows that fail the web-quality rules; chat rows and rows without text pass through."""
    reasons: list[str | None] = []
    texts: list = []
    changed = False
    for row in rows_of(batch):
        text = row.get("text")
        if is_chat_row(row) or not isinstance(text, str):
            reasons.append(None)
            texts.append(text)
            continue
        reason, new_text = quality_check(text, args)
        reasons.append(reason)
        texts.append(new_text)
        changed = changed or (reason is None and new_text != text)
    return split_batch(batch, reasons, "quality", replace={"text": texts} if changed else None)
