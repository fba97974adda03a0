"""Issue 4's two targets for any finished teacher/student pair, measured side by side in one process.

Accuracy: both models answer the same held-out rows with the same greedy budget and batch size as
``moatforge eval``. Speed: generated tokens/s is noisy on a shared CPU (±20% between sessions), so the two
models are timed in alternation (teacher, student, teacher, student, ...) and the ratio is taken between
their medians, which cancels drifts of the machine that a single back-to-back pair would keep.
The last line is one JSON object: ``ours`` is the student's accuracy, ``baseline`` the teacher's.

    .venv/bin/python benchmarks/student_vs_teacher.py --teacher runs/good-teacher2/final/model \
        --student runs/good-student3/final/model --data runs/quickstart/data/eval.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics

from moatforge.evaluate import evaluate_model, load_eval_rows

KEYS = ("tool_call_accuracy", "unparseable_rate", "loss", "tokens_per_s", "latency_s_mean", "params", "n")
KEYS += ("failure_reasons", "max_new_tokens", "truncated_rate")


def measure(model_dir: str, rows: list[dict], batch_size: int) -> dict:
    first = evaluate_model(model_dir, rows, None, batch_size, with_loss=True)
    return {**{k: first[k] for k in KEYS}, "tokens_per_s_runs": [first["tokens_per_s"]], "samples": first["samples"]}


def write_samples(path: str, rows: list[dict], results: dict) -> None:
    """Both models' answer to each row side by side, to see which rows the student loses."""
    with open(path, "w", encoding="utf-8") as fh:
        for i, row in enumerate(rows):
            record = {"row": i, "user": [m["content"] for m in row["messages"] if m["role"] == "user"][-1]}
            record |= {name: r["samples"][i] for name, r in results.items()}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the teacher's model directory")
    parser.add_argument("--student", required=True, help="the student's model directory")
    parser.add_argument("--data", required=True, help="held-out chat/tool-call JSONL (the demo's eval.jsonl)")
    parser.add_argument("--rows", type=int, default=None, help="score only the first N rows")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2, help="timed generations per model, alternated")
    parser.add_argument("--samples", help="write each row's two answers and verdicts to this JSONL file")
    args = parser.parse_args()
    rows = load_eval_rows(args.data, args.rows)
    models = {"teacher": args.teacher, "student": args.student}
    results = {name: measure(path, rows, args.batch_size) for name, path in models.items()}
    for _ in range(args.repeats - 1):
        for name, path in models.items():
            again = evaluate_model(path, rows, None, args.batch_size, with_loss=False)
            if again["tool_call_accuracy"] != results[name]["tool_call_accuracy"]:
                raise SystemExit(f"{name}: greedy decoding gave another accuracy on a repeat; results unstable")
            results[name]["tokens_per_s_runs"].append(again["tokens_per_s"])
    if args.samples:
        write_samples(args.samples, rows, results)
    for name, r in results.items():
        r.pop("samples")
        r["tokens_per_s"] = statistics.median(r["tokens_per_s_runs"])
        print(f"{name}: accuracy {r['tool_call_accuracy']:.1%}, loss {r['loss']}, tokens/s {r['tokens_per_s_runs']}")
        for reason, count in sorted(r["failure_reasons"].items(), key=lambda kv: -kv[1]):
            print(f"   {count} x {reason}")
    teacher, student = results["teacher"], results["student"]
    ours, baseline = student["tool_call_accuracy"], teacher["tool_call_accuracy"]
    print(
        json.dumps(
            {
                "name": "student_vs_teacher",
                "unit": "tool-call accuracy on the held-out rows (student vs teacher)",
                "ours": ours,
                "baseline": baseline,
                "ratio": ours / baseline if baseline else None,
                "speed_ratio": student["tokens_per_s"] / teacher["tokens_per_s"],
                "teacher": teacher,
                "student": student,
                "targets": {"ratio": ">= 0.95", "speed_ratio": ">= 2"},
            }
        )
    )


if __name__ == "__main__":
    main()
