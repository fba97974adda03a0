"""How many layers a depth-pruned student may keep and still generate at 2× its teacher's tokens/s.

The accuracy of the 12-layer SmolLM2 student stays below its 30-layer teacher's, and a deeper student would keep
more of it; this measures what each extra layer costs in speed. Every cut keeps evenly spread layers of the
teacher (speed depends on how many, not which) and generates exactly ``--new-tokens`` tokens per held-out prompt
(``min_new_tokens`` = ``max_new_tokens``), so an untrained cut's babble and a trained one's short answers cost the
same; prompts go in file order, 8 at a time, with ``moatforge eval``'s row-major output layer. Teacher and cuts
alternate within each repeat in one process; medians are compared. The last line is one JSON object: the
shallowest cut against the teacher, with the ratio of every cut.

    .venv/bin/python benchmarks/depth_speed.py --teacher runs/good-teacher2/final/model \\
        --data runs/quickstart/data/eval.jsonl --layers 12 14 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def cut(model_dir: str, keep: int | None):
    """The teacher itself (``keep`` None) or the student ``distill.student=prune:N`` would start from, built
    the same way (``prune_layers``: a model born with N layers, so its cache indices are its own)."""
    from moatforge.models import even_layers, load_model, prune_layers, row_major_output_head

    if keep is None:
        return row_major_output_head(load_model(model_dir).eval())
    from transformers import AutoConfig

    total = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    with tempfile.TemporaryDirectory() as tmp:
        pruned = prune_layers(model_dir, even_layers(total, keep), f"{tmp}/model")
        return row_major_output_head(load_model(pruned).eval())


def tokens_per_s(model, tokenizer, prompts: list[str], new_tokens: int, batch_size: int) -> float:
    import torch

    tokenizer.padding_side = "left"
    seconds, produced = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        began = time.perf_counter()
        with torch.no_grad():
            model.generate(
                **enc,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        seconds += time.perf_counter() - began
        produced += enc["input_ids"].shape[0] * new_tokens
    return produced / seconds


def main() -> None:
    from moatforge.data import generation_prompt
    from moatforge.evaluate import load_eval_rows
    from moatforge.models import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", required=True, help="held-out JSONL whose prompts are generated from")
    parser.add_argument("--layers", type=int, nargs="+", default=[12, 14, 16])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.teacher)
    rows = load_eval_rows(args.data)
    prompts = [generation_prompt(tokenizer, r["messages"], r.get("tools")) for r in rows]
    teacher = cut(args.teacher, None)
    models = {"teacher": teacher, **{str(n): cut(args.teacher, n) for n in sorted(args.layers)}}
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            speeds[name].append(tokens_per_s(model, tokenizer, prompts, args.new_tokens, args.batch_size))
            print(f"{name}: {speeds[name][-1]:.1f} tokens/s", flush=True)
    median = {name: statistics.median(v) for name, v in speeds.items()}
    ratios = {name: round(median[name] / median["teacher"], 3) for name in models if name != "teacher"}
    shallowest = str(min(args.layers))
    print(
        json.dumps(
            {
                "name": "depth_speed",
                "unit": f"generated tokens/s, {args.new_tokens} forced tokens per prompt (cut vs teacher)",
                "ours": round(median[shallowest], 2),
                "baseline": round(median["teacher"], 2),
                "ratio": ratios[shallowest],
                "layers_kept": shallowest,
                "teacher_layers": len(teacher.model.layers),
                "ratio_by_layers_kept": ratios,
                "runs": {name: [round(s, 2) for s in v] for name, v in speeds.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
