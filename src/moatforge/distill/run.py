"""The driver side of ``moatforge distill``: check the pair, build the student, run the teacher, train.

Student training is ``moatforge train`` with the distillation objective swapped in, so the run directory,
checkpoints, resume and export are the fine-tuning ones.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from functools import partial
from pathlib import Path

from moatforge import storage
from moatforge.config import MoatforgeConfig
from moatforge.errors import MoatforgeError
from moatforge.models import cache_dir, resolve_model

TEACHER_OUTPUTS = "teacher_topk"
_META = "_moatforge_teacher.json"


def check_shared_vocab(teacher_dir: str | Path, student_dir: str | Path) -> int:
    """The number of real tokens both models share; a different tokenizer is an error naming the first clash.

    The KD loss compares distributions token id by token id, so the ids must mean the same strings.
    Embedding rows beyond the tokenizer (vocabularies padded to a multiple of 64) are allowed on either side.
    """
    from transformers import AutoConfig, AutoTokenizer

    vocab_t = AutoTokenizer.from_pretrained(str(teacher_dir)).get_vocab()
    vocab_s = AutoTokenizer.from_pretrained(str(student_dir)).get_vocab()
    if vocab_t != vocab_s:
        clash = _first_clash(vocab_t, vocab_s)
        raise MoatforgeError(
            f"teacher {teacher_dir} and student {student_dir} do not share a vocabulary ({len(vocab_t)} vs "
            f"{len(vocab_s)} tokens; {clash}); distillation needs the same tokenizer: pick a student of the "
            "teacher's family or distill.student=prune:N"
        )
    for role, path in (("teacher", teacher_dir), ("student", student_dir)):
        rows = AutoConfig.from_pretrained(str(path)).vocab_size
        if rows < len(vocab_t):
            raise MoatforgeError(
                f"{role} {path} has {rows} embedding rows for a {len(vocab_t)}-token vocabulary; it cannot be "
                "the tokenizer's model"
            )
    return len(vocab_t)


def _first_clash(vocab_t: dict[str, int], vocab_s: dict[str, int]) -> str:
    for tok, i in sorted(vocab_t.items(), key=lambda kv: kv[1]):
        if vocab_s.get(tok) != i:
            return f"{tok!r} is id {i} in the teacher but {vocab_s.get(tok)} in the student"
    extra = min(set(vocab_s) - set(vocab_t), key=vocab_s.get)
    return f"the student has extra tokens such as {extra!r}"


def student_init_dir(cfg: MoatforgeConfig, run_dir: str) -> Path:
    """Where a pruned student is written: inside a local run directory, else in the local model cache."""
    if storage.is_uri(run_dir):
        return cache_dir() / "students" / cfg.run.name
    return Path(run_dir) / "student_init"


def build_pruned_student(teacher_dir: Path, layers: int, method: str, cfg: MoatforgeConfig, out: Path, printer) -> Path:
    from transformers import AutoConfig

    from moatforge.models import even_layers, prune_layers

    total = AutoConfig.from_pretrained(str(teacher_dir)).num_hidden_layers
    if layers >= total:
        raise MoatforgeError(
            f"distill.student=prune:{layers} keeps {layers} layers but the teacher has only {total}; "
            f"choose N below {total}"
        )
    source = {"teacher": str(teacher_dir), "layers": layers, "method": method}
    marker = out / "moatforge_prune.json"
    if marker.is_file() and json.loads(marker.read_text()).get("teacher") == str(teacher_dir):
        previous = json.loads(marker.read_text())
        if {k: previous[k] for k in source} == source:
            printer(f"[distill] reusing the pruned student in {out} (layers {previous['kept']})")
            return out
    keep = even_layers(total, layers) if method == "even" else _ranked_layers(teacher_dir, layers, method, cfg)
    prune_layers(teacher_dir, keep, out)
    marker.write_text(json.dumps({**source, "kept": keep}) + "\n")
    printer(f"[distill] student: teacher's layers {keep} of {total} ({method}) -> {out}")
    return out


# Rows the layer ranking is judged on: the ranking settles on a few rows (each candidate cut costs a forward
# pass over all of them, and there are tens of candidates).
CALIBRATION_ROWS = 4


def _ranked_layers(teacher_dir: Path, layers: int, method: str, cfg: MoatforgeConfig) -> list[int]:
    """Layers to keep, in model order, judged on a few training rows: all but the most redundant block
    (``block``), what is left after dropping the least-missed layer one at a time (``greedy``), or the
    ``layers`` layers with the highest Block Influence (``importance``)."""
    from moatforge.data import BadRow, collate, encode_example, read_rows
    from moatforge.models import block_to_drop, greedy_layers, layer_importance, load_model, load_tokenizer

    tokenizer = load_tokenizer(teacher_dir, cfg.model.chat_template)
    encoded = []
    for item in read_rows(cfg.data.train).take(CALIBRATION_ROWS):
        try:
            encoded.append(encode_example(tokenizer, json.loads(item["row"]), cfg.data.max_seq_len, "truncate"))
        except (BadRow, ValueError):
            continue
    if not encoded:
        raise MoatforgeError(f"data.train {cfg.data.train} has no usable rows to rank the teacher's layers with")
    batches = [
        collate(
            [e.input_ids for e in encoded[i : i + 4]], [e.labels for e in encoded[i : i + 4]], tokenizer.pad_token_id
        )
        for i in range(0, len(encoded), 4)
    ]
    model = load_model(teacher_dir).eval()
    total = model.config.num_hidden_layers
    if method == "block":
        start = block_to_drop(model, batches, total - layers)
        return [i for i in range(total) if not start <= i < start + total - layers]
    if method == "greedy":
        return greedy_layers(model, batches, layers)
    scores = layer_importance(model, batches)
    return sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:layers])


def offline_teacher_pass(
    dataset, run_dir: str, rows: int, *, cfg: MoatforgeConfig, teacher_dir: str, vocab_size: int, pad_id: int, printer
):
    """Run the teacher over the first ``rows`` prepared rows (those the student's steps consume) once, and keep
    its top-k as Parquet; a re-run of the same run reuses it."""
    import time

    import ray.data

    from moatforge.distill.teacher import TeacherScorer

    args = cfg.distill
    out = storage.join(run_dir, TEACHER_OUTPUTS)
    meta = {
        "teacher": teacher_dir,
        "top_k": args.top_k,
        "temperature": args.temperature,
        "data": cfg.data.model_dump(mode="json"),
        "rows": rows,
    }
    previous = storage.read_text(storage.join(out, _META))
    if previous and json.loads(previous) == meta:
        printer(f"[distill] reusing the teacher's top-{args.top_k} outputs in {out}")
        return _load_outputs(out)
    t0 = time.time()
    printer(
        f"[distill] teacher pass: top-{args.top_k} log-probs of {meta['rows']} rows on {cfg.cluster.num_workers} actors"
    )
    threads = max(1, int(cfg.cluster.cpus_per_worker))
    local = not storage.is_uri(out)
    work = f"{out}.tmp-{uuid.uuid4().hex[:8]}" if local else out
    # A materialized split may be one block; split it so every actor of the pool gets work.
    dataset.limit(rows).repartition(cfg.cluster.num_workers * 4).map_batches(
        TeacherScorer,
        fn_constructor_args=(
            teacher_dir,
            args.top_k,
            args.temperature,
            vocab_size,
            pad_id,
            cfg.cluster.use_gpu,
            threads,
        ),
        batch_size=args.teacher_batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.cluster.num_workers),
        # Half a worker's CPUs per actor: a pool holding every CPU of a small cluster starves the read and
        # write tasks around it, and the pass never finishes.
        num_cpus=cfg.cluster.cpus_per_worker / 2,
        num_gpus=1 if cfg.cluster.use_gpu else 0,
    ).write_parquet(storage.join(work, "data"))
    if local:
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(work, out)
    storage.write_text(storage.join(out, _META), json.dumps(meta, indent=2) + "\n")  # last: marks it complete
    printer(f"[distill] teacher pass done in {time.time() - t0:.0f}s -> {out}")
    return _load_outputs(out)


def _load_outputs(out: str):
    """The stored teacher outputs, read into Ray's object store (spilled to disk when large) before training.

    Train workers hold every CPU of a small cluster, so a lazy Parquet read would find no CPU for its tasks
    and the first step would wait forever; the workers still stream their shards from the object store.
    """
    import ray.data

    return ray.data.read_parquet(storage.join(out, "data")).materialize()


def run_distill(cfg: MoatforgeConfig, printer=print) -> dict:
    from moatforge.distill.objective import DistillObjective
    from moatforge.models import load_tokenizer
    from moatforge.train.run import ensure_ray, run_training, validate_inputs

    args = cfg.distill
    if not args.teacher:
        raise MoatforgeError("distill.teacher is not set: pass distill.teacher=MODEL (e.g. runs/<run>/final/model)")
    validate_inputs(cfg)
    teacher_dir = resolve_model(args.teacher)
    run_dir = storage.join(storage.absolute(cfg.run.storage_path), cfg.run.name)
    pruning = args.student.startswith("prune:")
    if not pruning:
        student_dir = resolve_model(args.student)
        check_shared_vocab(teacher_dir, student_dir)
    ensure_ray(cfg.cluster.address)
    if pruning:
        layers = int(args.student.split(":", 1)[1])
        student_dir = build_pruned_student(
            teacher_dir, layers, args.prune_method, cfg, student_init_dir(cfg, run_dir), printer
        )
    vocab_size = check_shared_vocab(teacher_dir, student_dir)
    cfg.model.name_or_path = str(student_dir)
    printer(
        f"[distill] {args.mode} {args.loss} (alpha {args.alpha}, T {args.temperature}, top-{args.top_k}) "
        f"from {teacher_dir} into {student_dir}"
    )
    transform = None
    if args.mode == "offline":
        pad_id = load_tokenizer(student_dir, cfg.model.chat_template).pad_token_id
        transform = partial(
            offline_teacher_pass,
            cfg=cfg,
            teacher_dir=str(teacher_dir),
            vocab_size=vocab_size,
            pad_id=pad_id,
            printer=printer,
        )
    objective = DistillObjective(args, str(teacher_dir), vocab_size)
    summary = run_training(cfg, printer=printer, objective=objective, transform_train=transform, stage="distill")
    summary.update({"stage": "distill", "teacher": str(teacher_dir), "student_init": str(student_dir)})
    storage.write_text(storage.join(run_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary
