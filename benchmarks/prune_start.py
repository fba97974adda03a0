"""Where a depth-pruned student starts: held-out loss right after the cut, by ``distill.prune_method``.

Distillation has to win back whatever the cut loses, so the method that picks the layers matters most when the
training budget is small (the CPU demo). For each method and layer count this builds the student exactly as
``moatforge distill`` does (``distill.run._ranked_layers`` / ``even_layers`` + ``models.prune_layers``) and
scores it with ``evaluate.reference_loss`` on held-out chats, next to the teacher itself; the JSON line compares
``--ours`` with ``--baseline`` (default: ``greedy`` against ``block``).

    .venv/bin/python benchmarks/prune_start.py --teacher runs/quickstart-teacher/final/model \\
        --train runs/quickstart/data/train.jsonl --eval runs/quickstart/data/eval.jsonl --layers 12 18
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--train", required=True, help="rows the layer choice is calibrated on")
    parser.add_argument("--eval", required=True, help="held-out rows the loss is measured on")
    parser.add_argument("--layers", type=int, nargs="+", default=[12])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["block", "greedy", "importance", "even"])
    parser.add_argument("--ours", default="greedy", help="the method the JSON line's ratio is for")
    parser.add_argument("--baseline", default="block", help="the method it is compared with")
    args = parser.parse_args()

    import torch

    from moatforge.config import load_config
    from moatforge.distill.run import _ranked_layers
    from moatforge.evaluate import load_eval_rows, reference_loss
    from moatforge.models import even_layers, load_model, load_tokenizer, prune_layers

    torch.set_num_threads(max(1, torch.get_num_threads()))
    teacher = Path(args.teacher)
    rows = load_eval_rows(args.eval, limit=args.rows)
    cfg = load_config(None, [f"data.train={args.train}"])
    total = load_model(teacher).config.num_hidden_layers

    def loss(model_dir) -> float:
        return reference_loss(load_model(model_dir).eval(), load_tokenizer(model_dir), rows, 4)

    teacher_loss = loss(teacher)
    print(f"[prune] teacher ({total} layers): loss {teacher_loss:.3f}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.layers:
            for method in args.methods:
                t0 = time.perf_counter()
                keep = even_layers(total, n) if method == "even" else _ranked_layers(teacher, n, method, cfg)
                search_s = time.perf_counter() - t0
                value = loss(prune_layers(teacher, keep, Path(tmp) / f"{method}-{n}"))
                results[f"{method}:{n}"] = {"layers": keep, "loss": round(value, 3), "search_s": round(search_s, 1)}
                print(
                    f"[prune] {method:<10} keep {n:>2}: loss {value:.3f}  layers {keep}  ({search_s:.0f}s)", flush=True
                )
    worst = min(args.layers)
    ours = results[f"{args.ours}:{worst}"]["loss"]
    baseline = results[f"{args.baseline}:{worst}"]["loss"]
    print(
        json.dumps(
            {
                "name": f"pruned_student_start_loss_keep_{worst}",
                "unit": "held-out loss (lower is better)",
                "ours": ours,
                "baseline": baseline,
                "ratio": round(ours / baseline, 3),
                "ours_method": args.ours,
                "baseline_method": args.baseline,
                "teacher_loss": round(teacher_loss, 3),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
