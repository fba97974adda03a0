"""Curation throughput and dedup quality: moatforge's pipeline vs Hugging Face datatrove on the same corpus.

Builds a seeded corpus (``moatforge.curate.synthetic``: prose-like documents with planted exact and near
duplicates and low-quality documents, written as JSONL shards), then runs, one after the other on the same
files and the same number of CPUs:

- moatforge: ``run_curate`` with ``exact_dedup``, ``near_dedup`` (5-grams, its default 16 bands x 7 rows) and ``quality`` with the
  Gopher repetition + quality rules only, on a local Ray cluster of ``--cpus`` CPUs started beforehand
  (the time to start Ray is reported separately);
- datatrove: exact dedup (signature / find / filter), its 4-stage MinHash dedup (signatures, buckets,
  clusters, filter; 5-grams, its default 14 buckets x 8 hashes, or ``--datatrove-lsh 16x7``) and ``GopherRepetitionFilter`` + ``GopherQualityFilter``, each stage a
  ``LocalPipelineExecutor`` with ``--cpus`` workers, installed into its own virtual environment
  (``--datatrove-venv``, created on first use; datatrove is not a moatforge dependency).

Prints docs/s for both (documents in / wall time from reading the input to the written output), their ratio,
and dedup precision / recall / F1 against the planted truth; the last line is one JSON object.

    .venv/bin/python benchmarks/curate_bench.py --docs 50000 --cpus 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATATROVE_PINS = ["datatrove[processing]==0.10.1", "spacy==3.8.18", "orjson==3.13.0"]

# Runs inside the datatrove virtual environment: argv = input folder, work folder, cpus, shards.
DATATROVE_RUNNER = r"""
import json, sys, time
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
)
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups,
)
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

def text_of(doc: Document) -> str:
    return doc.text


def reader(folder, source=False):
    return JsonlReader(folder, id_key="doc_id" if source else "id")


def writer(folder):
    return JsonlWriter(folder, compression=None)


# The executor's forkserver imports __main__ in every worker: everything that runs goes under the guard.
if __name__ == "__main__":
    src, work, cpus, shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    buckets, hashes = (int(x) for x in sys.argv[5].split("x"))
    exact = ExactDedupConfig(content_getter=text_of)
    # 5-grams; 112 hash functions either way, as moatforge's 16 x 7 (datatrove's default is 14 x 8)
    minhash = MinhashConfig(num_buckets=buckets, hashes_per_bucket=hashes)
    stages = [
        ("exact_signatures", [reader(src, source=True), ExactDedupSignature(f"{work}/exact_sigs", config=exact)], shards),
        ("exact_find", [ExactFindDedups(f"{work}/exact_sigs", f"{work}/exact_dups", config=exact)], 1),
        ("exact_filter", [reader(src, source=True), ExactDedupFilter(f"{work}/exact_dups", config=exact,
                          exclusion_writer=writer(f"{work}/removed/exact")), writer(f"{work}/after_exact")], shards),
        ("minhash_signatures", [reader(f"{work}/after_exact"), MinhashDedupSignature(f"{work}/mh_sigs", config=minhash)],
         shards),
        ("minhash_buckets", [MinhashDedupBuckets(f"{work}/mh_sigs", f"{work}/mh_buckets", config=minhash)],
         minhash.num_buckets),
        ("minhash_cluster", [MinhashDedupCluster(f"{work}/mh_buckets", f"{work}/mh_remove", config=minhash)], 1),
        ("minhash_filter_gopher", [
            reader(f"{work}/after_exact"),
            MinhashDedupFilter(f"{work}/mh_remove", exclusion_writer=writer(f"{work}/removed/near")),
            GopherRepetitionFilter(exclusion_writer=writer(f"{work}/removed/gopher_repetition")),
            GopherQualityFilter(exclusion_writer=writer(f"{work}/removed/gopher_quality")),
            writer(f"{work}/output"),
        ], shards),
    ]
    seconds = {}
    for name, pipeline, tasks in stages:
        t0 = time.perf_counter()
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(cpus, tasks), logging_dir=f"{work}/logs/{name}",
                              skip_completed=False).run()
        seconds[name] = time.perf_counter() - t0
    print("DATATROVE_RESULT " + json.dumps({"seconds": seconds}))
"""


def ensure_datatrove(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = "import datatrove, spacy, xxhash, orjson"
    if python.exists() and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
        return python
    print(f"[bench] installing {' '.join(DATATROVE_PINS)} into {venv} (not a moatforge dependency)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *DATATROVE_PINS], check=True)
    return python


def _ids_in(folder: Path) -> list[str]:
    ids = []
    for path in sorted(folder.rglob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            ids.extend(json.loads(line)["id"] for line in f if line.strip())
    return ids


def run_datatrove(python: Path, corpus_dir: Path, work: Path, cpus: int, shards: int, lsh: str) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    script = work / "runner.py"
    script.write_text(DATATROVE_RUNNER)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, script, str(corpus_dir), str(work), str(cpus), str(shards), lsh],
        capture_output=True,
        text=True,
        env={**os.environ, "DATATROVE_COLORIZE_LOGS": "0"},
    )
    wall = time.perf_counter() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("DATATROVE_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"datatrove run failed (exit {proc.returncode})")
    result = json.loads(line.split(" ", 1)[1])
    removed = {
        step: _ids_in(work / "removed" / step) for step in ("exact", "near", "gopher_repetition", "gopher_quality")
    }
    return {
        "seconds": sum(result["seconds"].values()),
        "process_wall_s": wall,
        "stage_seconds": result["seconds"],
        "removed": removed,
        "kept": len(_ids_in(work / "output")),
    }


def run_moatforge(corpus_dir: Path, work: Path, cpus: int) -> dict:
    import pyarrow.parquet as pq
    import ray

    from moatforge.config import load_config
    from moatforge.curate.pipeline import run_curate
    from moatforge.train.run import ensure_ray

    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ensure_ray()
    ray_start = time.perf_counter() - t0
    steps = (
        "[{name: exact_dedup}, {name: near_dedup}, "
        "{name: quality, c4: false, fineweb: false, gopher_repetition: true, gopher_quality: true}]"
    )
    cfg = load_config(None, [f"curate.input={corpus_dir}", f"curate.output={work}", f"curate.steps={steps}"])
    t0 = time.perf_counter()
    manifest = run_curate(cfg, printer=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    ray.shutdown()
    rejects = pq.read_table(work / "rejects", columns=["step", "meta"]).to_pylist()
    removed: dict[str, list[str]] = {}
    for row in rejects:
        removed.setdefault(row["step"], []).append(json.loads(row["meta"])["doc_id"])
    return {
        "seconds": seconds,
        "ray_start_s": ray_start,
        "stage_seconds": manifest["seconds_per_step"],
        "removed": removed,
        "kept": manifest["rows_kept"],
    }


def quality_scores(removed: set[str], corpus) -> dict:
    junk = {d for d, k in corpus.kind.items() if k == "junk"}
    return {
        "junk_removed": len(removed & junk) / len(junk) if junk else 1.0,
        "clean_removed": len(removed - junk),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs for moatforge, workers for datatrove")
    parser.add_argument("--shards", type=int, default=8, help="JSONL input files")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/moatforge-curate-bench"))
    parser.add_argument("--datatrove-venv", type=Path, default=Path.home() / ".cache/moatforge/datatrove-venv")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument(
        "--datatrove-lsh", default="14x8", help="datatrove's MinHash buckets x hashes (default: its own 14x8)"
    )
    args = parser.parse_args()

    from moatforge.curate.synthetic import dedup_scores, make_corpus

    python = None if args.skip_datatrove else ensure_datatrove(args.datatrove_venv)
    t0 = time.perf_counter()
    corpus = make_corpus(args.docs, seed=args.seed)
    corpus_dir = args.work_dir / "corpus"
    shutil.rmtree(corpus_dir, ignore_errors=True)
    corpus.write_jsonl(corpus_dir, shards=args.shards)
    kinds = {k: sum(1 for v in corpus.kind.values() if v == k) for k in ("source", "exact", "near", "junk")}
    print(f"[bench] corpus: {args.docs} docs {kinds} in {time.perf_counter() - t0:.1f}s", flush=True)

    ours = run_moatforge(corpus_dir, args.work_dir / "moatforge", args.cpus)
    ours_dedup = dedup_scores(
        ours["removed"].get("exact_dedup", []) + ours["removed"].get("near_dedup", []), corpus.cluster
    )
    ours_quality = quality_scores(set(ours["removed"].get("quality", [])), corpus)
    ours_rate = args.docs / ours["seconds"]
    print(
        f"[bench] moatforge: {ours['seconds']:.1f}s = {ours_rate:.0f} docs/s (Ray start {ours['ray_start_s']:.1f}s "
        f"not included), dedup P={ours_dedup['precision']:.4f} R={ours_dedup['recall']:.4f} F1={ours_dedup['f1']:.4f}",
        flush=True,
    )
    result = {
        "name": "curate_docs_per_s_vs_datatrove",
        "unit": "docs/s",
        "ours": round(ours_rate, 1),
        "baseline": None,
        "ratio": None,
        "docs": args.docs,
        "cpus": args.cpus,
        "ours_f1": round(ours_dedup["f1"], 4),
        "ours_dedup": {k: round(v, 4) if isinstance(v, float) else v for k, v in ours_dedup.items()},
        "ours_quality": ours_quality,
        "ours_seconds": round(ours["seconds"], 2),
        "ours_ray_start_s": round(ours["ray_start_s"], 2),
        "ours_docs_per_s_incl_ray_start": round(args.docs / (ours["seconds"] + ours["ray_start_s"]), 1),
        "ours_step_seconds": ours["stage_seconds"],
    }
    if python is not None:
        base = run_datatrove(
            python, corpus_dir, args.work_dir / "datatrove", args.cpus, args.shards, args.datatrove_lsh
        )
        base_dedup = dedup_scores(base["removed"]["exact"] + base["removed"]["near"], corpus.cluster)
        gopher = set(base["removed"]["gopher_repetition"]) | set(base["removed"]["gopher_quality"])
        base_rate = args.docs / base["seconds"]
        print(
            f"[bench] datatrove: {base['seconds']:.1f}s = {base_rate:.0f} docs/s, dedup "
            f"P={base_dedup['precision']:.4f} R={base_dedup['recall']:.4f} F1={base_dedup['f1']:.4f}",
            flush=True,
        )
        print(f"[bench] ratio (moatforge / datatrove docs/s): {ours_rate / base_rate:.2f}", flush=True)
        result.update(
            {
                "baseline": round(base_rate, 1),
                "ratio": round(ours_rate / base_rate, 3),
                "baseline_f1": round(base_dedup["f1"], 4),
                "baseline_lsh": args.datatrove_lsh,
                "baseline_dedup": {k: round(v, 4) if isinstance(v, float) else v for k, v in base_dedup.items()},
                "baseline_quality": quality_scores(gopher, corpus),
                "baseline_seconds": round(base["seconds"], 2),
                "baseline_stage_seconds": {k: round(v, 2) for k, v in base["stage_seconds"].items()},
            }
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
