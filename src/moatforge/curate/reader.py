"""Read raw exports row by row, so that a malformed line becomes an audited reject instead of a crash.

Ray Data's JSON reader fails a whole file on one bad line, so each input file is read by one task of our own
(``flat_map`` over the file list): every line gets a stable id from its file and line number, and anything
unparseable is emitted with ``step="read"`` and a reason that names the file and line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterator

from moatforge import storage
from moatforge.errors import MoatforgeError

ROW_FIELDS = ("text", "messages", "tools")
OUT_COLUMNS = ("id", "source", "text", "messages", "tools", "meta", "step", "reason")
_EXT = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".csv", ".txt", ".md")


def list_inputs(path: str) -> list[dict]:
    """Every input file with its size; a missing path or an empty folder is a one-line error."""
    found = storage.list_files(path, _EXT)
    if found is None:
        raise MoatforgeError(f"curate.input {path} does not exist (point it at a file or folder of exports)")
    files = [{"path": f, "size": size} for f, size in found if f.endswith(_EXT)]
    if not files:
        raise MoatforgeError(f"curate.input {path} holds no {'/'.join(_EXT)} files")
    return files


def _row_id(path: str, line: int) -> str:
    return hashlib.blake2b(f"{path}:{line}".encode(), digest_size=8).hexdigest()


def _row(path: str, line: int, obj=None, reason: str | None = None, raw: str | None = None) -> dict:
    out = {c: None for c in OUT_COLUMNS}
    out.update({"id": _row_id(path, line), "source": f"{path}:{line}"})
    if reason is not None:
        out.update({"step": "read", "reason": reason, "text": raw})
        return out
    if not isinstance(obj, dict):
        out.update({"step": "read", "reason": "not_an_object", "text": json.dumps(obj, default=str)[:10000]})
        return out
    text, messages, tools = obj.get("text"), obj.get("messages"), obj.get("tools")
    if messages is None and text is None:
        out.update({"step": "read", "reason": "no_text_or_messages", "meta": json.dumps(obj, default=str)})
        return out
    if text is not None and not isinstance(text, str):
        out.update({"step": "read", "reason": "text_not_a_string", "meta": json.dumps(obj, default=str)})
        return out
    out["text"] = text
    out["messages"] = messages if messages is None or isinstance(messages, str) else json.dumps(messages)
    out["tools"] = tools if tools is None or isinstance(tools, str) else json.dumps(tools)
    extra = {k: v for k, v in obj.items() if k not in ROW_FIELDS and k != "id"}
    out["meta"] = json.dumps(extra, default=str) if extra else None
    return out


class _RawStream(io.RawIOBase):
    """Lets Python's buffered line iteration and gzip run over a pyarrow stream (local or object store)."""

    def __init__(self, stream):
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def _open(fs, p: str):
    # compression=None: pyarrow would otherwise gunzip by extension and hide where a corrupt file breaks.
    stream = io.BufferedReader(_RawStream(fs.open_input_stream(p, compression=None)), buffer_size=1 << 20)
    return gzip.open(stream) if p.endswith(".gz") else stream


def read_file(item: dict) -> Iterator[dict]:
    """All rows of one input file, good and bad; a file that breaks mid-way (corrupt gzip) becomes a reject too."""
    rows = 0
    try:
        for row in _read_file(item["path"]):
            rows += 1
            yield row
    except (OSError, EOFError, ValueError) as exc:
        yield _row(item["path"], -(rows + 1), reason="unreadable_file", raw=f"{type(exc).__name__}: {exc}"[:1000])


def _read_file(path: str) -> Iterator[dict]:
    """All rows of one input file, good and bad, each with its source ``file:line``."""
    fs, p = storage.resolve(path)
    if p.endswith((".txt", ".md")):
        data = fs.open_input_stream(p, compression=None).read()
        try:
            yield _row(path, 1, {"text": data.decode("utf-8")})
        except UnicodeDecodeError:
            yield _row(path, 1, reason="undecodable_bytes", raw=data[:10000].decode("utf-8", "replace"))
        return
    if p.endswith(".parquet"):
        import pyarrow.parquet as pq

        line = 0
        for batch in pq.ParquetFile(fs.open_input_file(p)).iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                line += 1
                yield _row(path, line, obj)
        return
    with _open(fs, p) as f:
        if p.endswith(".csv"):
            reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline=""))
            for line, obj in enumerate(reader, start=2):
                yield _row(path, line, {k: v for k, v in obj.items() if v != "" and k is not None})
            return
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield _row(path, line, reason="undecodable_bytes", raw=raw[:10000].decode("utf-8", "replace"))
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                yield _row(path, line, reason="invalid_json", raw=text[:10000])
                continue
            yield _row(path, line, obj)


def file_digest(path: str) -> str:
    fs, p = storage.resolve(path)
    h = hashlib.sha256()
    with fs.open_input_stream(p) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
