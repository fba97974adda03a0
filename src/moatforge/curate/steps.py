"""Row-level curate steps and their registry.

Every step has the signature ``step(batch, args) -> (kept, rejected)``: ``kept`` holds the surviving rows
(possibly with rewritten text), ``rejected`` the dropped rows unchanged plus ``step`` and ``reason``
columns, and ``len(kept) + len(rejected) == len(batch)``. Columns a step does not read pass through
untouched. Steps are pure functions of the batch and their pydantic args, which is what lets the
pipeline run them inside Ray Data ``map_batches`` and lets tests call them on a hand-made DataFrame.

Exact and near dedup are not here because they need a global view (a groupby); their building blocks
are ``content_hash``/``pick_representative`` (``text_utils``) and the MinHash-LSH functions (``minhash``).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal

import jsonschema
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SkipValidation, field_validator

from moatforge.curate.minhash import (
    UnionFind,
    clusters_from_buckets,
    estimate_jaccard,
    jaccard,
    lsh_band_keys,
    minhash_signature,
    shingles,
)
from moatforge.curate.pii import PiiArgs, pii, redact
from moatforge.curate.quality import QualityArgs, quality
from moatforge.curate.text_utils import (
    content_hash,
    content_text,
    is_chat_row,
    normalize_text,
    parse_messages,
    parse_tools,
    pick_representative,
    row_text,
    rows_of,
    split_batch,
    to_py,
    words,
)

__all__ = [
    "LANGUAGE_STOP_WORDS",
    "STEPS",
    "ChatValidateArgs",
    "DecontaminateArgs",
    "LanguageArgs",
    "NormalizeArgs",
    "PiiArgs",
    "QualityArgs",
    "UnionFind",
    "build_ngram_index",
    "chat_check",
    "chat_validate",
    "clusters_from_buckets",
    "content_hash",
    "decontaminate",
    "estimate_jaccard",
    "guess_language",
    "jaccard",
    "language",
    "lsh_band_keys",
    "minhash_signature",
    "normalize",
    "normalize_text",
    "pick_representative",
    "pii",
    "quality",
    "redact",
    "row_text",
    "shingles",
]


# ---------------------------------------------------------------- normalize


class NormalizeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    form: Literal["NFC", "NFKC"] = "NFC"
    keep_indentation: bool = True


def _normalize_content(content: Any, args: NormalizeArgs) -> Any:
    if isinstance(content, str):
        return normalize_text(content, keep_indentation=args.keep_indentation, form=args.form)
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part = {**part, "text": _normalize_content(part["text"], args)}
            elif isinstance(part, str):
                part = _normalize_content(part, args)
            parts.append(part)
        return parts
    return content


def normalize(batch: pd.DataFrame, args: NormalizeArgs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonicalise ``text`` and message contents; drop rows left with nothing to train on.

    Reasons: ``empty_after_normalize`` (only whitespace/control characters), ``no_content`` (neither text
    nor messages) and ``bad_messages`` (a messages value that is not a list of objects or not valid JSON).
    Tool-call arguments are left byte-for-byte alone: they are JSON, and whitespace inside JSON strings
    is data.
    """
    reasons: list[str | None] = []
    texts: list = []
    messages_out: list = []
    text_changed = messages_changed = False
    for row in rows_of(batch):
        text = row.get("text")
        if isinstance(text, str):
            new_text = normalize_text(text, keep_indentation=args.keep_indentation, form=args.form)
            text_changed = text_changed or new_text != text
            text = new_text
        texts.append(text)

        raw = row.get("messages")
        if not is_chat_row(row):
            messages_out.append(raw)
            if not isinstance(text, str):
                reasons.append("no_content")
            else:
                reasons.append(None if text else "empty_after_normalize")
            continue
        try:
            parsed = parse_messages(raw)
        except ValueError:
            messages_out.append(raw)
            reasons.append("bad_messages")
            continue
        new_messages = [
            {**m, "content": _normalize_content(m["content"], args)} if "content" in m else m for m in parsed
        ]
        if new_messages != parsed:
            messages_changed = True
            messages_out.append(json.dumps(new_messages, ensure_ascii=False) if isinstance(raw, str) else new_messages)
        else:
            messages_out.append(raw if isinstance(raw, str) else parsed)
        reasons.append(None if row_text({"messages": new_messages}) else "empty_after_normalize")

    replace: dict[str, list] = {}
    if text_changed:
        replace["text"] = texts
    if messages_changed:
        replace["messages"] = messages_out
    return split_batch(batch, reasons, "normalize", replace=replace)


# ---------------------------------------------------------------- decontaminate


def build_ngram_index(texts: Iterable[str], n: int = 13, min_words: int = 5) -> set[str]:
    """Word n-grams (``words()`` tokens joined by one space) of evaluation texts, for ``decontaminate``.

    A text shorter than ``n`` words contributes its whole word sequence as one gram, so a short eval
    question is still found verbatim inside a longer training row. Texts under ``min_words`` words are
    skipped: "yes" or "thank you" would otherwise flag most of a corpus. For chat eval sets, pass each
    user/assistant content separately rather than ``row_text`` of the whole conversation, so that grams
    never straddle two messages.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    index: set[str] = set()
    for text in texts:
        tokens = words(text)
        if len(tokens) < max(min_words, 1):
            continue
        if len(tokens) < n:
            index.add(" ".join(tokens))
        else:
            index.update(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return index


class DecontaminateArgs(BaseModel):
    """``ngrams`` is the index from ``build_ngram_index`` (same ``n``), passed in by the pipeline.

    It is excluded from serialisation (it is data, not config) and not validated element by element, so
    constructing the args around a multi-million-gram index costs nothing. Build the args once per worker
    (e.g. in a Ray Data callable class's ``__init__``) so the gram lengths are computed only once.
    """

    model_config = ConfigDict(extra="forbid")

    n: int = Field(13, ge=1)
    ngrams: SkipValidation[set[str] | frozenset[str]] = Field(default_factory=set, exclude=True, repr=False)
    _lengths: tuple[int, tuple[int, ...]] | None = PrivateAttr(None)

    def gram_lengths(self) -> tuple[int, ...]:
        """Distinct gram lengths in the index: ``n`` plus those of whole short eval texts.

        Cached against the index object's identity, so ``model_copy(update={"ngrams": ...})`` cannot
        reuse the lengths of a different index.
        """
        if self._lengths is None or self._lengths[0] != id(self.ngrams):
            self._lengths = (id(self.ngrams), tuple(sorted({g.count(" ") + 1 for g in self.ngrams})))
        return self._lengths[1]


def decontaminate(batch: pd.DataFrame, args: DecontaminateArgs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows sharing any indexed n-gram with the evaluation data (reason ``eval_overlap``)."""
    index = args.ngrams
    lengths = args.gram_lengths()
    reasons: list[str | None] = []
    for row in rows_of(batch):
        tokens = words(row_text(row))
        hit = any(
            " ".join(tokens[i : i + length]) in index for length in lengths for i in range(len(tokens) - length + 1)
        )
        reasons.append("eval_overlap" if hit else None)
    return split_batch(batch, reasons, "decontaminate")


# ---------------------------------------------------------------- chat_validate


class ChatValidateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Arguments not in the tool's schema are rejected unless the schema itself allows them: a model
    # trained on invented arguments learns to invent them.
    allow_unknown_args: bool = False
    # A tool call in a row that declares no tools cannot be checked; by default that is a rejection.
    require_declared_tools: bool = True


_ROLES = frozenset({"system", "user", "assistant", "tool"})


@functools.lru_cache(maxsize=4096)
def _validator(schema_json: str, allow_unknown_args: bool) -> jsonschema.protocols.Validator | None:
    schema = json.loads(schema_json)
    if not isinstance(schema, dict):
        return None
    if not allow_unknown_args and schema.get("type", "object") == "object" and "additionalProperties" not in schema:
        schema = {**schema, "additionalProperties": False}
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return cls(schema)


def _tool_schemas(tools: list[dict] | None) -> dict[str, dict] | None:
    if not tools:
        return None
    schemas = {}
    for tool in tools:
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("tool without a name")
        schemas[name] = fn.get("parameters") or {"type": "object", "properties": {}}
    return schemas


def _call_reason(call: Any, schemas: dict[str, dict] | None, args: ChatValidateArgs) -> str | None:
    if not isinstance(call, dict):
        return "bad_tool_call"
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        return "bad_tool_call"
    raw = fn.get("arguments")
    if isinstance(raw, str):
        try:
            arguments = json.loads(raw)
        except json.JSONDecodeError:
            return "bad_tool_arguments_json"
    else:
        # Arguments stored as a struct went through Arrow, which pads absent keys with None.
        arguments = to_py(raw, drop_none=True)
    if not isinstance(arguments, dict):
        return "bad_tool_arguments_json"
    if schemas is None:
        return "unknown_tool" if args.require_declared_tools else None
    if name not in schemas:
        return "unknown_tool"
    validator = _validator(json.dumps(schemas[name], sort_keys=True), args.allow_unknown_args)
    if validator is None:
        return "bad_tool_schema"
    if not validator.is_valid(arguments):
        return "tool_args_schema"
    return None


def chat_check(messages: Any, tools: Any, args: ChatValidateArgs) -> str | None:
    """First reason a conversation is not valid training data, or None.

    Order rules: an optional system message first; then a user turn; an assistant turn only after a user
    or tool message; tool messages only directly after an assistant turn with tool calls (several in a
    row for parallel calls, never more than there were calls), each ``tool_call_id`` naming one of those
    calls when both sides carry ids; a user turn only after an assistant turn without pending calls; and
    the conversation ends with an assistant message (which may itself be a tool call: that is the target
    of tool-use training).
    """
    try:
        parsed = parse_messages(messages)
    except ValueError:
        return "bad_messages"
    if not parsed:
        return "bad_messages"
    try:
        schemas = _tool_schemas(parse_tools(tools))
    except ValueError:
        return "bad_tools"

    prev: str | None = None
    n_calls = answered = 0
    open_ids: set[str] = set()
    for i, message in enumerate(parsed):
        role = message.get("role")
        if role not in _ROLES:
            return "bad_role"
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            return "bad_messages"
        if role == "system":
            if i != 0:
                return "bad_role_order"
        elif role == "user":
            if prev not in (None, "system", "assistant") or (prev == "assistant" and n_calls):
                return "bad_role_order"
            if not content_text(content).strip():
                return "empty_message"
        elif role == "assistant":
            if prev not in ("user", "tool"):
                return "bad_role_order"
            calls = message.get("tool_calls") or []
            if not calls and not content_text(content).strip():
                return "empty_message"
            for call in calls:
                if reason := _call_reason(call, schemas, args):
                    return reason
            n_calls, answered = len(calls), 0
            open_ids = {c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]}
        else:  # tool
            if not (prev == "tool" or (prev == "assistant" and n_calls)):
                return "bad_role_order"
            answered += 1
            if answered > n_calls:
                return "bad_role_order"
            call_id = message.get("tool_call_id")
            if isinstance(call_id, str) and call_id and open_ids:
                if call_id not in open_ids:
                    return "bad_tool_call_id"
                open_ids.discard(call_id)
        prev = role
    if prev != "assistant":
        return "no_final_assistant"
    return None


def chat_validate(batch: pd.DataFrame, args: ChatValidateArgs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop malformed conversations and tool calls that do not match their declared tools; text rows pass.

    Reasons: ``bad_messages``, ``bad_tools``, ``bad_role``, ``bad_role_order``, ``empty_message``,
    ``no_final_assistant``, ``bad_tool_call``, ``bad_tool_call_id``, ``bad_tool_arguments_json``,
    ``unknown_tool``, ``bad_tool_schema`` (the declared schema itself is invalid) and ``tool_args_schema``.
    """
    reasons = [
        chat_check(row.get("messages"), row.get("tools"), args) if is_chat_row(row) else None for row in rows_of(batch)
    ]
    return split_batch(batch, reasons, "chat_validate")


# ---------------------------------------------------------------- language

# High-frequency function words per language, chosen to overlap little between the Romance languages.
# Enough to tell these seven apart on a paragraph; not a substitute for fastText/GlotLID on short text.
_STOP_WORD_TEXT = {
    "en": (
        "the and of to is in that it for was with on as are be this have not you by at from but or which they "
        "we an will can has would there their been were what if about when he she his her our your do does"
    ),
    "de": (
        "der die und das ist nicht ein eine zu den von mit sich des auf für im dem auch es werden aus er hat "
        "dass sie nach wird bei einer um noch wie über zum war haben nur oder aber vor zur bis mehr durch man "
        "sind ich wir kann"
    ),
    "fr": (
        "le la les de des et est un une du en que qui dans pour pas au sur ne se plus par avec il elle ce sont "
        "nous vous mais ou aux cette été leur ont je ces sa son l d qu"
    ),
    "es": (
        "el la los las de del y que en un una es por con para no se su al lo como más pero sus le ya este sí "
        "porque esta entre cuando muy sin sobre también me hasta hay donde está son fue ha yo"
    ),
    "it": (
        "il lo la gli le di del della che e è un una per non in con su sono da dei nel alla si come anche più "
        "ma ho questo questa essere ha al sul degli delle io mi ci dell all nell"
    ),
    "nl": (
        "de het een en van is dat niet op te zijn voor met die er maar om ook als aan bij nog dan naar wordt "
        "door worden kan heeft deze wat hij zij ik je we wel geen uit over"
    ),
    "pt": (
        "o os a as de do da dos das e é que em um uma no na nos para com não por se mais mas como ao ele ela "
        "foi são seu sua ou quando muito já também só pelo pela isso está eu você"
    ),
}
LANGUAGE_STOP_WORDS: dict[str, frozenset[str]] = {code: frozenset(t.split()) for code, t in _STOP_WORD_TEXT.items()}


def guess_language(text: str) -> tuple[str | None, float]:
    """(language code, fraction of tokens that are that language's stop words); (None, 0.0) without words."""
    tokens = words(text)
    if not tokens:
        return None, 0.0
    counts = Counter(tokens)
    best, best_score = None, 0.0
    for code, stop_words in LANGUAGE_STOP_WORDS.items():
        score = sum(counts[w] for w in stop_words) / len(tokens)
        if score > best_score:
            best, best_score = code, score
    return best, best_score


_PROSE_ROLES = frozenset({"system", "user", "assistant"})


class LanguageArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: list[str] = Field(default_factory=lambda: ["en"])
    # Prose in any of the seven languages scores 0.3-0.5; code, tables and other languages score near 0.
    min_score: float = Field(0.1, ge=0, le=1)
    # Below this many words the guess is noise, so short rows are kept rather than dropped at random.
    min_words: int = Field(20, ge=0)
    reject_unknown: bool = True

    @field_validator("languages")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - LANGUAGE_STOP_WORDS.keys())
        if unknown:
            raise ValueError(f"unsupported language(s) {unknown}; choose from {sorted(LANGUAGE_STOP_WORDS)}")
        return value


def language(batch: pd.DataFrame, args: LanguageArgs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows whose guessed language is not wanted: ``language_<code>``, or ``language_unknown``.

    Chat rows are judged by system/user/assistant contents only: tool-call arguments and tool results are
    mostly JSON, whose keys are English whatever language the conversation is in.
    """
    wanted = set(args.languages)
    reasons: list[str | None] = []
    for row in rows_of(batch):
        text = row_text(row, include_tool_arguments=False, roles=_PROSE_ROLES)
        if len(words(text)) < args.min_words:
            reasons.append(None)
            continue
        code, score = guess_language(text)
        if code is None or score < args.min_score:
            reasons.append("language_unknown" if args.reject_unknown else None)
        else:
            reasons.append(None if code in wanted else f"language_{code}")
    return split_batch(batch, reasons, "language")


# ---------------------------------------------------------------- registry

StepFn = Callable[[pd.DataFrame, Any], tuple[pd.DataFrame, pd.DataFrame]]

STEPS: dict[str, tuple[StepFn, type[BaseModel]]] = {
    "normalize": (normalize, NormalizeArgs),
    "quality": (quality, QualityArgs),
    "pii": (pii, PiiArgs),
    "decontaminate": (decontaminate, DecontaminateArgs),
    "chat_validate": (chat_validate, ChatValidateArgs),
    "language": (language, LanguageArgs),
}
