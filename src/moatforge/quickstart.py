"""``moatforge quickstart`` (``make demo``): sample data → LoRA fine-tune of the real SmolLM2 (the teacher) →
distill a depth-pruned student from it → accuracy, speed and size of base, teacher and student.

Everything runs on an embedded local Ray cluster and must finish on a 2-core CPU in under 15 minutes, so the
defaults below are sized for that; on a real cluster pass a config with more data and steps.
"""

from __future__ import annotations

import json
import time

from moatforge import storage
from moatforge.config import MoatforgeConfig, apply_overrides, load_config
from moatforge.evaluate import evaluate_model, load_eval_rows
from moatforge.models import resolve_model
from moatforge.sample_data import write_dirty_sample_data

QUICKSTART_OVERRIDES = [
    "run.name=quickstart-teacher",
    "model.name_or_path=smollm2-135m-instruct",
    "cluster.num_workers=2",
    "data.max_seq_len=640",
    "train.zero_stage=2",
    "train.max_steps=28",
    "train.micro_batch_size=2",
    "train.grad_accum=1",
    "train.lr=1e-3",
    "train.warmup_ratio=0.1",
    "train.checkpoint_every_steps=14",
    "lora.enabled=true",
    "lora.r=16",
    "lora.alpha=32",
]
# The student: the teacher minus the block of 18 layers it misses least (lowest loss on training rows), full
# fine-tune on the teacher's top-k distribution; fewer layers is what makes it cheaper to serve. Online mode (the
# teacher scores each micro-batch inside the training workers) spends the same teacher compute as the offline Ray
# Data pass but not its start-up, which the 15-minute budget cannot spare; `moatforge distill` defaults to offline.
STUDENT_OVERRIDES = [
    "run.name=quickstart-student",
    "distill.student=prune:12",
    "distill.prune_method=block",
    "distill.mode=online",
    "distill.loss=forward_kl",
    "distill.alpha=0.5",
    "distill.temperature=1.0",
    "distill.top_k=16",
    "lora.enabled=false",
    "train.lr=3e-4",
    "train.max_steps=12",
    "train.checkpoint_every_steps=6",
]
# 24 rows x 3 models: each row costs ~2.5-4 s of a 2-core CPU per model (prefilling its tool list, then up to
# the longest reference's length in new tokens).
EVAL_ROWS = 24
# The served requests may be parallel calls (~85 tokens); the evals size their budget from the references.
SERVE_MAX_TOKENS = 96
# One generation batch: fewer sequential decode steps, which dominate on a CPU (measured: 61 s for the base
# model's 24 rows against 74 s in batches of 12, with the same outputs).
EVAL_BATCH = 24


def quickstart_config(overrides: list[str] | None = None) -> MoatforgeConfig:
    return load_config(None, QUICKSTART_OVERRIDES + list(overrides or []))


def student_config(cfg: MoatforgeConfig, teacher_dir: str, overrides: list[str] | None = None) -> MoatforgeConfig:
    """The distillation config: the teacher run's settings with the student's changes on top."""
    data = apply_overrides(cfg.model_dump(mode="json"), STUDENT_OVERRIDES + [f"distill.teacher={teacher_dir}"])
    return MoatforgeConfig.model_validate(apply_overrides(data, list(overrides or [])))


def run_quickstart(
    cfg: MoatforgeConfig | None = None, printer=print, student_overrides: list[str] | None = None
) -> dict:
    from transformers.utils import logging as hf_logging

    from moatforge.curate.pipeline import demo_steps, run_curate
    from moatforge.distill.run import run_distill
    from moatforge.report import cost_summary, write_report
    from moatforge.train.run import ensure_ray, run_training

    hf_logging.disable_progress_bar()  # per-file weight-loading bars bury the demo's own progress lines
    cfg = cfg or quickstart_config()
    t0 = time.time()
    stages = iter(range(1, 9))

    def stage(text: str) -> None:
        printer(f"\n== [{time.time() - t0:6.1f}s] {next(stages)}/8 {text}")

    home = storage.join(storage.absolute(cfg.run.storage_path), "quickstart")
    stage("generating a dirty tool-calling export (duplicates, PII, junk, leaked eval rows) and a held-out eval set")
    paths = write_dirty_sample_data(storage.join(home, "data"), seed=cfg.train.seed, n_train=400, n_eval=EVAL_ROWS)
    eval_rows = load_eval_rows(str(paths["eval"]), EVAL_ROWS)
    printer(f"   export: {paths['raw']}\n   eval:   {paths['eval']} ({len(eval_rows)} rows)")
    ensure_ray(cfg.cluster.address)

    stage("curating the export on Ray Data: dedup, quality, PII redaction, decontamination against the eval set")
    curated = storage.join(home, "curated")
    if not cfg.data.train:
        ccfg = cfg.model_copy(deep=True)
        ccfg.curate.input, ccfg.curate.output, ccfg.curate.overwrite = str(paths["raw"]), curated, True
        ccfg.curate.steps = demo_steps([str(paths["eval"])])
        run_curate(ccfg, printer=printer)
        cfg.data.train = curated
    # No eval-loss pass inside training (data.eval stays as given, usually unset): the demo measures the
    # held-out set by generation below, and a second pass over it would cost a minute of the 15.

    stage(f"evaluating the base model {cfg.model.name_or_path} on the held-out set")
    results: dict = {}
    results["base"] = _evaluate("base", resolve_model(cfg.model.name_or_path), eval_rows, printer)

    stage(f"teacher: LoRA fine-tune on Ray Train + DeepSpeed ZeRO-{cfg.train.zero_stage} ({cfg.train.max_steps} steps)")
    summary = run_training(cfg, printer=printer)
    results["train_summary"] = summary
    stage("evaluating the fine-tuned teacher")
    results["teacher"] = _evaluate("teacher", summary["final_model"], eval_rows, printer)

    scfg = student_config(cfg, summary["final_model"], student_overrides)
    stage(f"student: distilling {scfg.distill.student} of the teacher ({scfg.train.max_steps} steps)")
    student_summary = run_distill(scfg, printer=printer)
    results["distill_summary"] = student_summary
    stage("evaluating the distilled student")
    results["student"] = _evaluate("student", student_summary["final_model"], eval_rows, printer)
    storage.write_text(storage.join(home, "results.json"), json.dumps(results, indent=2) + "\n")

    stage("serving the student (Ray Serve, OpenAI API) and calling it with the openai client")
    results["served"] = _serve_student(student_summary["final_model"], eval_rows, printer)
    storage.write_text(storage.join(home, "results.json"), json.dumps(results, indent=2) + "\n")

    printer("\n" + results_table(results))
    printer("\n" + cost_summary(results, prices=cfg.cost.prices))
    report = write_report(home) if not storage.is_uri(home) else None
    if report is not None:
        printer(f"report: {report}")
    printer(
        f"\nresults: {storage.join(home, 'results.json')}\nteacher model: {summary['final_model']}"
        f"\nstudent model: {student_summary['final_model']}"
    )
    printer(f"done in {time.time() - t0:.0f}s")
    return results


def _serve_student(model_dir: str, eval_rows: list[dict], printer) -> list[dict]:
    """Three held-out requests with the tools their rows declare, as an application would send them."""
    from moatforge.serve.demo import serve_and_query

    picked = [r for r in eval_rows if r["messages"][-2]["role"] == "user" and r["messages"][-1].get("tool_calls")][:3]
    tools = list({t["function"]["name"]: t for r in picked for t in r.get("tools") or []}.values())
    questions = [r["messages"][-2]["content"] for r in picked]
    return serve_and_query(model_dir, questions, printer=printer, tools=tools, max_tokens=SERVE_MAX_TOKENS)


def _evaluate(name: str, model_dir, eval_rows: list[dict], printer) -> dict:
    result = _row(evaluate_model(model_dir, eval_rows, None, EVAL_BATCH, with_loss=False))
    printer(
        f"   {name}: tool-call accuracy {result['tool_call_accuracy']:.1%}, "
        f"{result['tokens_per_s']:.1f} generated tokens/s, {result['params']:,} parameters"
    )
    return result


def _row(result: dict) -> dict:
    keys = ("tool_call_accuracy", "unparseable_rate", "loss", "latency_s_mean", "tokens_per_s", "n", "params")
    keys += ("max_new_tokens", "truncated_rate")
    return {**{k: result[k] for k in keys}, "model_path": result["model_path"]}


def results_table(results: dict) -> str:
    header = f"{'model':<10} {'accuracy':>9} {'unparseable':>12} {'ref loss':>9} {'tokens/s':>9} {'latency s':>10} {'params':>12}"
    lines = [header, "-" * len(header)]
    for name in ("base", "teacher", "student"):
        r = results.get(name)
        if not r:
            continue
        loss = f"{r['loss']:.3f}" if r["loss"] is not None else "-"
        lines.append(
            f"{name:<10} {r['tool_call_accuracy']:>9.1%} {r['unparseable_rate']:>12.1%} {loss:>9} "
            f"{r['tokens_per_s']:>9.1f} {r['latency_s_mean']:>10.2f} {r['params']:>12,}"
        )
    return "\n".join(lines)
