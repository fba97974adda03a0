"""Chat/tool rendering with assistant-only loss masks, and the Ray Data datasets that feed training.

Masks come from rendering prefixes of the conversation and mapping character spans onto token offsets,
so they are right for any chat template (ours or a model's own) without ``{% generation %}`` markers.
JSONL is read as text lines and parsed here rather than by ``read_json`` so that one bad line is skipped
and counted instead of failing the whole read.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from moatforge import storage
from moatforge.errors import MoatforgeError

IGNORE_INDEX = -100
ROLES = {"system", "user", "assistant", "tool"}
_JSON_EXT = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_PARQUET_EXT = (".parquet",)


class BadRow(ValueError):
    """A row that cannot become a training example; its message is the counted reason."""

    def __init__(self, reason: str, status: str = "bad_row"):
        super().__init__(reason)
        self.status = status


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


# ---------------------------------------------------------------- row normalisation


def normalize_row(row: dict) -> dict:
    """Validate one row's shape and return ``{"text": ...}`` or ``{"messages": ..., "tools": ...}``."""
    if not isinstance(row, dict):
        raise BadRow("row is not a JSON object")
    messages = row.get("messages")
    if messages is not None:
        if isinstance(messages, str):
            messages = _loads(messages, "messages")
        return {"messages": _normalize_messages(messages), "tools": _normalize_tools(row.get("tools"))}
    text = row.get("text")
    if isinstance(text, str) and text.strip():
        return {"text": text}
    raise BadRow("row has neither a non-empty 'text' string nor a 'messages' list")


def _loads(value: str, what: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise BadRow(f"'{what}' is a string that is not valid JSON") from None


def _normalize_tools(tools) -> list[dict] | None:
    if tools is None:
        return None
    if isinstance(tools, str):
        tools = _loads(tools, "tools")
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadRow("'tools' is not a list of tool definitions")
    for tool in tools:
        fn = tool.get("function", tool)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRow("a tool definition lacks function.name")
    return tools or None


def _normalize_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise BadRow("'messages' is not a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRow(f"message {i} has no valid role (one of {sorted(ROLES)})")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise BadRow(f"message {i} content is not a string")
        clean = {"role": m["role"], "content": content}
        if m["role"] == "assistant" and m.get("tool_calls"):
            clean["tool_calls"] = [_normalize_call(tc, i) for tc in m["tool_calls"]]
        elif content is None:
            raise BadRow(f"message {i} ({m['role']}) has no content")
        if m["role"] == "tool" and m.get("tool_call_id"):
            clean["tool_call_id"] = m["tool_call_id"]
        out.append(clean)
    if not any(m["role"] == "assistant" for m in out):
        raise BadRow("conversation has no assistant message to learn from", status="no_target")
    return out


def _normalize_call(tc, i: int) -> dict:
    fn = tc.get("function", tc) if isinstance(tc, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadRow(f"message {i} has a tool call without function.name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        args = _loads(args, "tool_calls.function.arguments")
    if not isinstance(args, dict):
        raise BadRow(f"message {i} has tool call arguments that are not a JSON object")
    return {"type": "function", "function": {"name": fn["name"], "arguments": args}}


# ---------------------------------------------------------------- rendering and masking


def render(tokenizer, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_spans(tokenizer, messages: list[dict], tools: list[dict] | None) -> tuple[str, list[tuple]]:
    """The rendered conversation and the character spans of each assistant reply, end-of-turn included."""
    full = render(tokenizer, messages, tools)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:i], tools, add_generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1], tools)
        if not (full.startswith(upto) and upto.startswith(prefix)):
            raise BadRow("the chat template does not render conversations prefix-stably; set model.chat_template")
        spans.append((len(prefix), len(upto.rstrip())))
    return full, spans


def encode_example(tokenizer, row: dict, max_seq_len: int, overlong: str = "drop") -> Encoded:
    norm = normalize_row(row)
    if "text" in norm:
        ids = tokenizer(norm["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = list(ids)
    else:
        full, spans = assistant_spans(tokenizer, norm["messages"], norm["tools"])
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        labels = [IGNORE_INDEX] * len(ids)
        for k, (start, _end) in enumerate(enc["offset_mapping"]):
            if any(s <= start < e for s, e in spans):
                labels[k] = ids[k]
    if len(ids) > max_seq_len:
        if overlong == "drop":
            raise BadRow(f"longer than data.max_seq_len ({len(ids)} > {max_seq_len} tokens)", status="overlong")
        ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    if all(label == IGNORE_INDEX for label in labels[1:]):
        raise BadRow("no assistant tokens to learn from within data.max_seq_len", status="no_target")
    return Encoded(input_ids=list(ids), labels=list(labels))


def generation_prompt(tokenizer, messages: list[dict], tools: list[dict] | None) -> str:
    """The prompt that asks the model for the conversation's final assistant turn."""
    norm = normalize_row({"messages": messages, "tools": tools})
    return render(tokenizer, norm["messages"][:-1], norm["tools"], add_generation_prompt=True)


def pack(examples: list[Encoded], max_seq_len: int) -> list[Encoded]:
    """Greedy first-fit packing of short examples; each keeps its own labels so masking survives."""
    packed: list[Encoded] = []
    current = Encoded([], [])
    for ex in examples:
        if current.input_ids and len(current.input_ids) + len(ex.input_ids) > max_seq_len:
            packed.append(current)
            current = Encoded([], [])
        current.input_ids += ex.input_ids
        # The first token of a packed example is never a target of the previous one.
        current.labels += [IGNORE_INDEX] + ex.labels[1:] if current.labels else ex.labels
    if current.input_ids:
        packed.append(current)
    return packed


def collate(input_ids: list, labels: list, pad_id: int) -> dict[str, np.ndarray]:
    length = max(len(x) for x in input_ids)
    n = len(input_ids)
    ids = np.full((n, length), pad_id, dtype=np.int64)
    lab = np.full((n, length), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    for i, (x, y) in enumerate(zip(input_ids, labels, strict=True)):
        ids[i, : len(x)] = x
        lab[i, : len(y)] = y
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}


# ---------------------------------------------------------------- files and Ray Data


def list_data_files(path: str) -> list[str]:
    """Files behind a data path: one file, a folder of them, or a curate output folder (its data/)."""
    curated = storage.join(path, "data")
    if storage.list_files(curated, _JSON_EXT + _PARQUET_EXT):
        path = curated
    found = storage.list_files(path, _JSON_EXT + _PARQUET_EXT)
    if found is None:
        raise MoatforgeError(f"data path {path} does not exist (set data.train / data.eval to a file or folder)")
    if not found:
        raise MoatforgeError(f"data folder {path} holds no .jsonl/.json/.parquet files")
    files = [f for f, _ in found]
    for f in files:
        if not f.endswith(_JSON_EXT + _PARQUET_EXT):
            raise MoatforgeError(f"data file {f} is neither JSONL (.jsonl/.json) nor Parquet (.parquet)")
    return files


def read_rows(path: str):
    """A Ray Dataset with one column ``row``: each source row as a JSON string (bad lines kept for counting)."""
    import ray.data

    files = list_data_files(path)
    json_files = [f for f in files if f.endswith(_JSON_EXT)]
    parquet_files = [f for f in files if f.endswith(_PARQUET_EXT)]
    parts = []
    if json_files:
        compressed = [f for f in json_files if f.endswith(".gz")]
        plain = [f for f in json_files if not f.endswith(".gz")]
        for group, args in ((plain, {}), (compressed, {"arrow_open_stream_args": {"compression": "gzip"}})):
            if group:
                ds = ray.data.read_text(group, drop_empty_lines=True, **args)
                parts.append(ds.map_batches(_lines_to_rows, batch_format="pyarrow"))
    if parquet_files:
        parts.append(ray.data.read_parquet(parquet_files).map_batches(_table_to_rows, batch_format="pyarrow"))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def _lines_to_rows(table: pa.Table) -> pa.Table:
    return pa.table({"row": table.column("text").cast(pa.string())})


def _table_to_rows(table: pa.Table) -> pa.Table:
    rows = [json.dumps(r, default=str) for r in table.to_pylist()]
    return pa.table({"row": pa.array(rows, type=pa.string())})


class Encoder:
    """Encodes batches of raw rows with one loaded tokenizer."""

    def __init__(self, tokenizer_dir: str, chat_template: str, max_seq_len: int, overlong: str):
        from moatforge.models import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_dir, chat_template)
        self.max_seq_len = max_seq_len
        self.overlong = overlong

    def __call__(self, table: pa.Table) -> pa.Table:
        ids, labels, status, reason = [], [], [], []
        for raw in table.column("row").to_pylist():
            try:
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, TypeError):
                    raise BadRow("line is not valid JSON") from None
                enc = encode_example(self.tokenizer, row, self.max_seq_len, self.overlong)
                ids.append(enc.input_ids)
                labels.append(enc.labels)
                status.append("ok")
                reason.append("")
            except BadRow as bad:
                ids.append([])
                labels.append([])
                status.append(bad.status)
                reason.append(str(bad))
        return pa.table(
            {
                "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
                "labels": pa.array(labels, type=pa.list_(pa.int32())),
                "status": pa.array(status, type=pa.string()),
                "reason": pa.array(reason, type=pa.string()),
            }
        )


def _pack_batch(table: pa.Table, max_seq_len: int) -> pa.Table:
    examples = [Encoded(i, y) for i, y in zip(table["input_ids"].to_pylist(), table["labels"].to_pylist(), strict=True)]
    packed = pack(examples, max_seq_len)
    return pa.table(
        {
            "input_ids": pa.array([e.input_ids for e in packed], type=pa.list_(pa.int32())),
            "labels": pa.array([e.labels for e in packed], type=pa.list_(pa.int32())),
        }
    )


@dataclass
class PreparedData:
    dataset: object
    rows: int
    counts: dict[str, int]
    tokens: int


@functools.lru_cache(maxsize=4)
def _cached_encoder(tokenizer_dir: str, chat_template: str, max_seq_len: int, overlong: str) -> Encoder:
    return Encoder(tokenizer_dir, chat_template, max_seq_len, overlong)


def encode_batch(table: pa.Table, tokenizer_dir: str, chat_template: str, max_seq_len: int, overlong: str) -> pa.Table:
    """Ray Data task function. Tasks run in Ray's pooled worker processes, which outlive a dataset, so the
    tokenizer (and the transformers import under it, ~6 s on two cores) is loaded once per process rather
    than once per dataset as a fresh actor pool would; every later split or run in the same job starts warm."""
    return _cached_encoder(tokenizer_dir, chat_template, max_seq_len, overlong)(table)


def prepare_dataset(
    path: str, tokenizer_dir: str, chat_template: str, max_seq_len: int, overlong: str, packing: bool, role: str
) -> PreparedData:
    """Read, encode and filter one split; counts of skipped rows by status come back for the summary."""
    encoded = (
        read_rows(path)
        .map_batches(
            encode_batch,
            fn_args=(str(tokenizer_dir), chat_template, max_seq_len, overlong),
            batch_format="pyarrow",
            batch_size=64,
        )
        .materialize()
    )
    counts: dict[str, int] = {}
    first_problem = ""
    for part in encoded.map_batches(_summarize, batch_format="pyarrow").take_all():
        counts[part["status"]] = counts.get(part["status"], 0) + int(part["rows"])
        first_problem = first_problem or part["reason"]
    tokens = counts.pop("_tokens", 0)
    if not counts.get("ok"):
        example = f" (first problem: {first_problem})" if first_problem else ""
        raise MoatforgeError(f"{role} data {path} has no usable rows{example}; {_count_text(counts)}")
    from ray.data.expressions import col

    kept = encoded.filter(expr=col("status") == "ok").select_columns(["input_ids", "labels"])
    if packing:
        kept = kept.map_batches(_pack_batch, fn_kwargs={"max_seq_len": max_seq_len}, batch_format="pyarrow")
    kept = kept.materialize()
    return PreparedData(dataset=kept, rows=counts["ok"] if not packing else kept.count(), counts=counts, tokens=tokens)


def _summarize(table: pa.Table) -> pa.Table:
    """Per-block counts by status (plus the token total under ``_tokens``) in one cheap pass."""
    import pyarrow.compute as pc

    status = table.column("status").to_pylist()
    reasons = table.column("reason").to_pylist()
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for s, r in zip(status, reasons, strict=True):
        counts[s] = counts.get(s, 0) + 1
        if s != "ok":
            first.setdefault(s, r)
    counts["_tokens"] = int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0)
    keys = list(counts)
    return pa.table(
        {
            "status": pa.array(keys, type=pa.string()),
            "rows": pa.array([counts[k] for k in keys], type=pa.int64()),
            "reason": pa.array([first.get(k, "") for k in keys], type=pa.string()),
        }
    )


def _count_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no rows at all"
