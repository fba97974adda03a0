"""What ``models.row_major_output_head`` buys ``moatforge eval``'s generation, and the student/teacher ratio.

Each model generates greedy answers to the same held-out prompts (``moatforge eval``'s budget and batch size)
with its stock ``F.linear`` output layer and with the row-major one, alternated (plain, fast, plain, fast, ...),
in one process; medians are compared, and the answers must be identical. With ``--teacher`` and ``--student``
the JSON line's ``ours``/``baseline`` are the student's tokens/s with and without, and it adds the student/teacher
speed ratio both ways, since the output layer costs both models the same time per step.

    .venv/bin/python benchmarks/output_head.py --teacher runs/good-teacher2/final/model \\
        --student runs/good-student5/final/model --data runs/quickstart/data/eval.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics


def timed_runs(model_dir: str, rows: list[dict], batch_size: int, repeats: int) -> dict:
    from moatforge.data import generation_prompt
    from moatforge.evaluate import answer_token_budget, generate
    from moatforge.models import load_model, load_tokenizer, row_major_output_head

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).eval()
    prompts = [generation_prompt(tokenizer, r["messages"], r.get("tools")) for r in rows]
    budget = answer_token_budget(tokenizer, rows)
    heads = {"plain": model.get_output_embeddings()}
    heads["row_major"] = row_major_output_head(model).get_output_embeddings()
    speeds: dict[str, list[float]] = {"plain": [], "row_major": []}
    texts: dict[str, list[str]] = {}
    for _ in range(repeats):
        for name, head in heads.items():
            model.set_output_embeddings(head)
            out, counts, _, seconds = generate(model, tokenizer, prompts, budget, batch_size)
            if texts.setdefault(name, out) != out:
                raise SystemExit(f"{model_dir}: greedy answers changed between repeats of {name}")
            speeds[name].append(sum(counts) / seconds)
    if texts["plain"] != texts["row_major"]:
        differ = sum(a != b for a, b in zip(texts["plain"], texts["row_major"], strict=True))
        raise SystemExit(f"{model_dir}: the row-major output layer changed {differ} greedy answers")
    result = {name: statistics.median(values) for name, values in speeds.items()}
    print(f"{model_dir}: tokens/s plain {speeds['plain']}  row-major {speeds['row_major']}", flush=True)
    return {**result, "runs": speeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--data", required=True, help="held-out chat/tool-call JSONL (the demo's eval.jsonl)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8, help="moatforge eval's default")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from moatforge.evaluate import load_eval_rows

    rows = load_eval_rows(args.data, args.rows)
    teacher = timed_runs(args.teacher, rows, args.batch_size, args.repeats)
    student = timed_runs(args.student, rows, args.batch_size, args.repeats)
    print(
        json.dumps(
            {
                "name": "row_major_output_head",
                "unit": "student's generated tokens/s (row-major output layer vs F.linear)",
                "ours": round(student["row_major"], 2),
                "baseline": round(student["plain"], 2),
                "ratio": round(student["row_major"] / student["plain"], 3),
                "teacher_ratio": round(teacher["row_major"] / teacher["plain"], 3),
                "student_over_teacher_plain": round(student["plain"] / teacher["plain"], 3),
                "student_over_teacher_row_major": round(student["row_major"] / teacher["row_major"], 3),
                "teacher": teacher,
                "student": student,
                "rows": len(rows),
            }
        )
    )


if __name__ == "__main__":
    main()
