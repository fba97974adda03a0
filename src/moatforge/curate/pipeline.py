"""``moatforge curate``: a streaming Ray Data pipeline of small steps, with an audit trail of every dropped row.

Row-level steps (normalize, quality, pii, ...) run back to back inside one ``map_batches`` per segment; the
global steps need a view across the corpus and are Ray Data groupbys: ``exact_dedup`` hash-partitions rows by
content hash, ``near_dedup`` groups MinHash-LSH band keys and joins the candidate pairs into clusters. Every
row stays in the dataset until the end, tagged with the step and reason that dropped it, so the counts
conserve by construction: rows read = kept + rejected.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moatforge import storage
from moatforge.config import MoatforgeConfig
from moatforge.curate.minhash import (
    DEFAULT_BANDS,
    DEFAULT_ROWS,
    EMPTY_HASH,
    band_hashes,
    clusters_from_buckets,
    signatures,
)
from moatforge.curate.reader import OUT_COLUMNS, file_digest, list_inputs, read_file
from moatforge.curate.steps import STEPS, DecontaminateArgs, build_ngram_index
from moatforge.curate.text_utils import content_hash, parse_messages, row_text, rows_of
from moatforge.errors import MoatforgeError

COLUMNS = (*OUT_COLUMNS, "dup_of", "pii_counts", "_timings")
SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])
KEPT_COLUMNS = ["id", "text", "messages", "tools", "meta"]
REJECT_COLUMNS = ["id", "source", "step", "reason", "dup_of", "text", "messages", "tools", "meta"]


class ExactDedupArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NearDedupArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ngram: int = Field(5, ge=1)
    bands: int = Field(DEFAULT_BANDS, ge=1)
    rows: int = Field(DEFAULT_ROWS, ge=1)
    seed: int = 42


class DecontaminateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(13, ge=1)
    eval_files: list[str] = Field(default_factory=list)


GLOBAL_STEPS = {"exact_dedup": ExactDedupArgs, "near_dedup": NearDedupArgs}


def parse_steps(specs: list[dict]) -> list[tuple[str, BaseModel]]:
    """Validate ``curate.steps`` up front: a typo in step 5 must not cost a pass over the corpus."""
    valid = sorted([*STEPS, *GLOBAL_STEPS])
    parsed = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise MoatforgeError(f"curate.steps[{i}] must be a mapping with a 'name' (one of {', '.join(valid)})")
        name = spec["name"]
        params = {k: v for k, v in spec.items() if k != "name"}
        if name == "decontaminate":
            model: type[BaseModel] = DecontaminateSpec
        elif name in GLOBAL_STEPS:
            model = GLOBAL_STEPS[name]
        elif name in STEPS:
            model = STEPS[name][1]
        else:
            raise MoatforgeError(f"curate.steps[{i}]: unknown step {name!r}; valid steps: {', '.join(valid)}")
        try:
            parsed.append((name, model.model_validate(params)))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            hint = f"; valid keys: {', '.join(model.model_fields)}" if err["type"] == "extra_forbidden" else ""
            raise MoatforgeError(f"curate.steps[{i}] ({name}): {loc}: {err['msg']}{hint}") from None
    return parsed


# ---------------------------------------------------------------- batch helpers


def _to_table(df: pd.DataFrame) -> pa.Table:
    cols = {}
    for c in COLUMNS:
        values = df[c].tolist() if c in df.columns else [None] * len(df)
        cols[c] = pa.array([None if _missing(v) else str(v) for v in values], type=pa.string())
    return pa.table(cols, schema=SCHEMA)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and value != value


def _json_dict(value: Any) -> dict:
    if _missing(value) or not isinstance(value, str) or not value.startswith("{"):
        return {}
    return json.loads(value)


def _pending(df: pd.DataFrame) -> pd.Series:
    return df["reason"].isna()


def run_row_steps(batch: pd.DataFrame, steps: list[tuple[str, Any, Any]]) -> pa.Table:
    """Apply row-level steps in order to the rows nothing has dropped yet; record time per step."""
    mask = _pending(batch)
    done = [batch.loc[~mask]]
    live = batch.loc[mask].reset_index(drop=True)
    timings: dict[str, float] = {}
    if "_timings" in batch.columns:  # keep what earlier segments measured on these rows
        for value in batch["_timings"]:
            for step, seconds in _json_dict(value).items():
                timings[step] = timings.get(step, 0.0) + seconds
    for name, fn, args in steps:
        t0 = time.perf_counter()
        live, rejected = fn(live, args)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        done.append(rejected)
    out = pd.concat([*done, live], ignore_index=True)
    out["_timings"] = None
    if len(out):
        out.loc[0, "_timings"] = json.dumps(timings)
    return _to_table(out)


# Decontamination args per eval index, built once per worker process: Ray reuses task workers, so each one
# fetches and indexes the n-gram set once rather than once per batch.
_DECONTAMINATE_ARGS: dict[str, DecontaminateArgs] = {}


def _decontaminate_args(n: int, ngrams_ref) -> DecontaminateArgs:
    import ray

    key = ngrams_ref.hex() if ngrams_ref is not None else ""
    if key not in _DECONTAMINATE_ARGS:
        ngrams = ray.get(ngrams_ref) if ngrams_ref is not None else set()
        _DECONTAMINATE_ARGS.clear()
        _DECONTAMINATE_ARGS[key] = DecontaminateArgs(n=n, ngrams=ngrams)
    return _DECONTAMINATE_ARGS[key]


def row_steps_task(batch: pd.DataFrame, specs: list[tuple[str, Any]], ngrams_ref=None) -> pa.Table:
    """Ray Data task: the row-level steps of one segment over one batch.

    Tasks rather than an actor pool: on a small cluster starting and tearing down a pool cost ~6 s each,
    more than the steps themselves on a demo-sized input.
    """
    steps = []
    for name, args in specs:
        if name == "decontaminate":
            args = _decontaminate_args(args.n, ngrams_ref)
        steps.append((name, STEPS[name][0], args))
    return run_row_steps(batch, steps)


def _exact_key(batch: pd.DataFrame) -> pd.DataFrame:
    live = _pending(batch).to_numpy()
    keys = [content_hash(row_text(row)) if ok else None for row, ok in zip(rows_of(batch), live, strict=True)]
    batch = batch.copy(deep=False)
    batch["_key"] = pd.Series(keys, index=batch.index, dtype=object)
    return batch


def _mark(batch: pd.DataFrame, rep: pd.Series, step: str, reason: str) -> pd.DataFrame:
    """Reject the live rows whose representative ``rep`` (NaN when they have none) is another row."""
    hit = (rep.notna() & (rep != batch["id"]) & _pending(batch)).to_numpy()
    if hit.any():
        batch = batch.copy()
        batch.loc[hit, "step"] = step
        batch.loc[hit, "reason"] = reason
        batch.loc[hit, "dup_of"] = rep[hit].astype(str).to_numpy()
    return batch


def _mark_exact(batch: pd.DataFrame, keeper: dict[str, str]) -> pd.DataFrame:
    rep = batch["_key"].map(keeper) if keeper else pd.Series(None, index=batch.index, dtype=object)
    return _mark(batch, rep, "exact_dedup", "exact_duplicate").drop(columns=["_key"])


def exact_dedup(ds, partitions: int):
    """Hash-partition live rows by content hash (a Ray Data groupby that counts each key and keeps its smallest
    id); only keys seen more than once come back to the driver, so its memory scales with the duplicates."""
    from ray.data.aggregate import Count, Min
    from ray.data.expressions import col

    keyed = ds.map_batches(_exact_key, batch_format="pandas").materialize()
    groups = (
        keyed.select_columns(["_key", "id"])
        .filter(expr=col("_key").is_not_null())
        .groupby("_key", num_partitions=partitions)
        .aggregate(Count(), Min("id"))
        .filter(expr=col("count()") > 1)
        .take_all()
    )
    keeper = {g["_key"]: g["min(id)"] for g in groups}
    return keyed.map_batches(_mark_exact, fn_kwargs={"keeper": keeper}, batch_format="pandas")


_BAND_SCHEMA = {"bucket": np.int64, "id": object}


def _band_rows(batch: pd.DataFrame, args: NearDedupArgs) -> pd.DataFrame:
    """One ``(bucket, id)`` row per band of every live row with words; signatures for the batch in one go."""
    live = batch.loc[_pending(batch).to_numpy()]
    if live.empty:
        return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in _BAND_SCHEMA.items()})
    sigs = signatures([row_text(r) for r in rows_of(live)], args.ngram, args.bands * args.rows, args.seed)
    has_words = ~np.all(sigs == EMPTY_HASH, axis=1)
    buckets = band_hashes(sigs[has_words], args.bands, args.rows)
    ids = live["id"].to_numpy(dtype=object)[has_words]
    return pd.DataFrame({"bucket": buckets.ravel(), "id": np.repeat(ids, args.bands)})


def _in_buckets(batch: pd.DataFrame, buckets: np.ndarray) -> pd.DataFrame:
    return batch.loc[batch["bucket"].isin(buckets).to_numpy()]


def _mark_near(batch: pd.DataFrame, representative: dict[str, str]) -> pd.DataFrame:
    rep = batch["id"].map(representative) if representative else pd.Series(None, index=batch.index, dtype=object)
    return _mark(batch, rep, "near_dedup", "near_duplicate")


def near_dedup(ds, args: NearDedupArgs, partitions: int):
    """Candidate pairs from shared LSH buckets (a Ray Data groupby), clusters by union-find, smallest id kept.

    The groupby only counts rows per bucket; the rows of buckets seen more than once are then collected by a
    filter, so only ids that share a bucket reach the driver and its memory scales with the duplicates.
    """
    from ray.data.aggregate import Count
    from ray.data.expressions import col

    ds = ds.materialize()
    bands = ds.map_batches(_band_rows, fn_kwargs={"args": args}, batch_format="pandas").materialize()
    representative: dict[str, str] = {}
    if bands.count():
        hot = (
            bands.groupby("bucket", num_partitions=partitions)
            .aggregate(Count())
            .filter(expr=col("count()") > 1)
            .take_all()
        )
        if hot:
            hot_buckets = np.array([h["bucket"] for h in hot], dtype=np.int64)
            members: dict[int, list[str]] = {}
            rows = bands.map_batches(_in_buckets, fn_kwargs={"buckets": hot_buckets}, batch_format="pandas")
            for row in rows.iter_rows():
                members.setdefault(row["bucket"], []).append(row["id"])
            representative = clusters_from_buckets(members)
    return ds.map_batches(_mark_near, fn_kwargs={"representative": representative}, batch_format="pandas")


def _cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@contextlib.contextmanager
def _sort_shuffle():
    """Run the dedup groupbys on Ray Data's sort-based shuffle (tasks) rather than the hash shuffle (actors).

    Measured on 2 cores: a groupby-aggregate over 300 rows costs ~0.4 s with tasks and ~10 s with the hash
    shuffle's aggregator actors, which dominated small and medium curate runs. Both spill to disk at scale.
    """
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()
    old = ctx.shuffle_strategy
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        ctx.shuffle_strategy = old


# ---------------------------------------------------------------- the run


def _summarize(batch: pd.DataFrame) -> pd.DataFrame:
    counts: dict[str, float] = {"rows": len(batch)}
    for step, reason in zip(batch["step"], batch["reason"], strict=True):
        if not _missing(reason):
            key = f"rejected\t{step}\t{reason}"
            counts[key] = counts.get(key, 0) + 1
    for value in batch["pii_counts"]:
        for kind, n in _json_dict(value).items():
            counts[f"pii\t{kind}"] = counts.get(f"pii\t{kind}", 0) + n
    for value in batch["_timings"]:
        for step, seconds in _json_dict(value).items():
            counts[f"time\t{step}"] = counts.get(f"time\t{step}", 0.0) + seconds
    return pd.DataFrame({"key": list(counts), "value": [float(v) for v in counts.values()]})


def _eval_ngrams(files: list[str], n: int) -> set[str]:
    """n-grams of the eval rows' user and assistant contents (or text).

    System prompts and tool results are left out: an instruction shared by train and eval by design, or a
    JSON tool result, is not a leaked test question, and indexing them would drop every row that shares them.
    """
    texts = []
    for path in files:
        for item in read_file({"path": path}):
            if item["reason"] is not None:
                continue
            messages = parse_messages(item["messages"]) if item["messages"] else None
            if messages:
                texts.extend(
                    m["content"]
                    for m in messages
                    if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
                )
            else:
                texts.append(row_text(item))
    return build_ngram_index(texts, n=n)


def demo_steps(eval_files: list[str]) -> list[dict]:
    """``curate.steps`` for a chat/tool-call export that is decontaminated against ``eval_files``.

    Cheap row filters first (so dedup only sees rows worth keeping), then exact and near dedup, then the
    13-gram eval overlap check, and PII redaction last so that it rewrites only the rows that are kept.
    ``quality`` judges text rows only: in a chat export those are fragments and page furniture, while
    conversations pass through to ``chat_validate``'s structural checks.
    """
    return [
        {"name": "normalize"},
        {"name": "chat_validate"},
        {"name": "quality"},
        {"name": "exact_dedup"},
        {"name": "near_dedup"},
        {"name": "decontaminate", "eval_files": [str(f) for f in eval_files]},
        {"name": "pii"},
    ]


def run_curate(cfg: MoatforgeConfig, printer=print) -> dict:
    import ray
    import ray.data

    from moatforge.train.run import ensure_ray

    cur = cfg.curate
    if not cur.input or not cur.output:
        raise MoatforgeError(
            "curate.input and curate.output must both be set (e.g. curate.input=raw/ curate.output=clean/)"
        )
    steps = parse_steps(cur.steps)
    inputs = list_inputs(cur.input)
    if storage.exists(cur.output) and not cur.overwrite:
        raise MoatforgeError(
            f"curate.output {cur.output} already exists; pick a new folder or set curate.overwrite=true"
        )
    for name, args in steps:
        if name == "decontaminate":
            for f in args.eval_files:
                if not storage.exists(f):
                    raise MoatforgeError(f"decontaminate eval file {f} does not exist")
    ensure_ray(cfg.cluster.address)
    cpus = _cpus()
    started = time.time()

    with _sort_shuffle():
        ds = ray.data.from_items([{"path": i["path"]} for i in inputs]).flat_map(read_file)
        ds = ds.map_batches(_to_table, batch_format="pandas")
        global_time: dict[str, float] = {}
        segment: list[tuple[str, Any]] = []

        def flush(ds):
            if not segment:
                return ds
            ngrams = next((a for n, a in segment if n == "decontaminate"), None)
            ref = ray.put(_eval_ngrams(ngrams.eval_files, ngrams.n)) if ngrams is not None else None
            specs = list(segment)
            segment.clear()
            return ds.map_batches(row_steps_task, fn_kwargs={"specs": specs, "ngrams_ref": ref}, batch_format="pandas")

        for name, args in steps:
            if name not in GLOBAL_STEPS:
                segment.append((name, args))
                continue
            ds = flush(ds).materialize()
            t0 = time.time()
            ds = exact_dedup(ds, cpus) if name == "exact_dedup" else near_dedup(ds, args, cpus)
            ds = ds.map_batches(_to_table, batch_format="pandas").materialize()
            global_time[name] = time.time() - t0
        ds = flush(ds).materialize()

        totals: dict[str, float] = {}
        for part in ds.map_batches(_summarize, batch_format="pandas").iter_rows():
            totals[part["key"]] = totals.get(part["key"], 0.0) + part["value"]
        manifest = _manifest(cfg, inputs, totals, global_time, time.time() - started)
        if manifest["rows_kept"] == 0:
            raise MoatforgeError(
                f"curation kept no rows out of {manifest['rows_read']} read; see the reasons: {manifest['rejected']}"
            )
        _write_outputs(ds, cur.output, manifest)
    printer(format_summary(manifest))
    from moatforge.metrics import record_curate

    record_curate(manifest, cfg.run.name)  # Prometheus, through this driver's Ray metrics export
    return manifest


def _manifest(cfg, inputs, totals, global_time, wall) -> dict:
    rejected: dict[str, dict[str, int]] = {}
    for key, value in totals.items():
        if key.startswith("rejected\t"):
            _, step, reason = key.split("\t")
            rejected.setdefault(step, {})[reason] = int(value)
    rows_read = int(totals.get("rows", 0))
    n_rejected = sum(sum(r.values()) for r in rejected.values())
    seconds = {k.split("\t")[1]: round(v, 3) for k, v in totals.items() if k.startswith("time\t")}
    seconds.update({k: round(v, 3) for k, v in global_time.items()})
    return {
        "inputs": [{**i, "sha256": file_digest(i["path"])} for i in inputs],
        "rows_read": rows_read,
        "rows_kept": rows_read - n_rejected,
        "rows_rejected": n_rejected,
        "rejected": rejected,
        "redactions": {k.split("\t")[1]: int(v) for k, v in totals.items() if k.startswith("pii\t")},
        "seconds_per_step": seconds,
        "wall_time_s": round(wall, 3),
        "config": cfg.model_dump(mode="json"),
    }


def _write_outputs(ds, output: str, manifest: dict) -> None:
    """Write everything under a temporary name and rename, so a reader never sees half an output."""
    from ray.data.expressions import col

    local = not storage.is_uri(output)
    target = os.path.abspath(output) if local else output.rstrip("/")
    work = f"{target}.tmp-{uuid.uuid4().hex[:8]}" if local else target
    ds.filter(expr=col("reason").is_null()).select_columns(KEPT_COLUMNS).write_parquet(storage.join(work, "data"))
    rejects = ds.filter(expr=col("reason").is_not_null()).select_columns(REJECT_COLUMNS)
    rejects.write_parquet(storage.join(work, "rejects"))
    storage.write_text(storage.join(work, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
    if local:
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(work, target)


def format_summary(manifest: dict) -> str:
    """A few printable lines: rows read/kept/rejected, rejects per step (in pipeline order) and reason, redactions."""
    lines = [
        f"[curate] read {manifest['rows_read']} rows: kept {manifest['rows_kept']}, "
        f"rejected {manifest['rows_rejected']} in {manifest['wall_time_s']:.1f}s"
    ]
    order = ["read"] + [s.get("name") for s in manifest.get("config", {}).get("curate", {}).get("steps", [])]
    rank = {name: i for i, name in enumerate(order)}
    for step, reasons in sorted(manifest["rejected"].items(), key=lambda kv: (rank.get(kv[0], len(order)), kv[0])):
        detail = ", ".join(f"{r}={n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        lines.append(f"[curate]   {step:<14} {sum(reasons.values()):>6}  ({detail})")
    if manifest["redactions"]:
        lines.append("[curate] redacted: " + ", ".join(f"{k}={v}" for k, v in sorted(manifest["redactions"].items())))
    return "\n".join(lines)
