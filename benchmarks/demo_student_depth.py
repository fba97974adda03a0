"""How deep the demo's student must be: the demo's 12-step online distillation at several depths.

Takes the teacher a finished ``make demo`` left in ``runs/quickstart-teacher`` and distils students from it with
exactly the demo's student settings (``quickstart.student_config``) except the overrides given per variant, then
scores each with the demo's eval (same 24 held-out rows, same budget, one batch). The baseline is the teacher,
scored the same way in the same run. The last line is one JSON object (the best student against the teacher).

    .venv/bin/python benchmarks/demo_student_depth.py distill.student=prune:12 distill.student=prune:18 \
        distill.student=prune:22
"""

from __future__ import annotations

import argparse
import json
import time

from moatforge.distill.run import run_distill
from moatforge.evaluate import load_eval_rows
from moatforge.quickstart import EVAL_ROWS, _evaluate, quickstart_config, student_config
from moatforge.train.run import ensure_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="comma-separated key=value overrides of the demo's student")
    parser.add_argument("--runs", default="runs", help="where make demo left its runs")
    parser.add_argument("--out", default="runs/demo-student-depth", help="storage path for the students")
    args = parser.parse_args()
    teacher = f"{args.runs}/quickstart-teacher/final/model"
    rows = load_eval_rows(f"{args.runs}/quickstart/data/eval.jsonl", EVAL_ROWS)
    cfg = quickstart_config([f"run.storage_path={args.out}", f"data.train={args.runs}/quickstart/curated"])
    ensure_ray(None)
    teacher_result = _evaluate("teacher", teacher, rows, print)
    results = {}
    for spec in args.variants:
        name = "depth-" + "".join(c if c.isalnum() else "-" for c in spec)
        started = time.time()
        summary = run_distill(student_config(cfg, teacher, [f"run.name={name}", *spec.split(",")]), printer=print)
        results[spec] = {
            **_evaluate(spec, summary["final_model"], rows, print),
            "distill_s": time.time() - started,
            "final_train_loss": summary["final_loss"],
        }
    best_spec = max(results, key=lambda k: results[k]["tool_call_accuracy"])
    best = results[best_spec]
    ours, baseline = best["tool_call_accuracy"], teacher_result["tool_call_accuracy"]
    keys = ("tool_call_accuracy", "unparseable_rate", "tokens_per_s", "params", "distill_s", "final_train_loss")
    print(
        json.dumps(
            {
                "name": "demo_student_depth",
                "unit": "tool-call accuracy on the demo's held-out rows (best student vs teacher)",
                "ours": ours,
                "baseline": baseline,
                "ratio": ours / baseline if baseline else None,
                "best": best_spec,
                "speed_ratio": best["tokens_per_s"] / teacher_result["tokens_per_s"],
                "variants": {k: {x: v[x] for x in keys} for k, v in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
