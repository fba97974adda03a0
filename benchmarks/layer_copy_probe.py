"""Which of a teacher's layers copy spans from the prompt, and whether a depth cut keeps them.

The distilled students' main failure is a ticket ``title`` that should be copied verbatim from the user's
message (``"Raise"`` for ``"Invoice PDF shows wrong logo"``). Copying is done by a few attention layers
(induction heads); a cut chosen by the loss over all tokens can drop them, because titles are a small share of
the tokens. This probe measures the teacher's loss on the title tokens only, with each layer skipped in turn,
and then with two 13-layer cuts: ``block`` (what ``distill.prune_method=block`` picked) and the 13 layers whose
single removal hurts title copying most. The last line is one JSON object: ``ours`` is the copy-ranked cut's
title-token loss, ``baseline`` the ``block`` cut's (both before any distillation; lower is better).

    .venv/bin/python benchmarks/layer_copy_probe.py --teacher runs/good-teacher2/final/model \
        --data runs/good/data2/train.jsonl --block 0,1,2,3,21,22,23,24,25,26,27,28,29
"""

from __future__ import annotations

import argparse
import json


def ticket_titles(row: dict) -> list[str]:
    from moatforge.toolcall_scoring import calls_from_message

    calls = [c for m in row["messages"] if m["role"] == "assistant" for c in calls_from_message(m)]
    return [c["arguments"]["title"] for c in calls if c["name"] == "create_ticket"]


def title_items(tokenizer, rows: list[dict], limit: int) -> list[tuple]:
    """(input ids, positions of the first ticket title's tokens inside the assistant's call) per row."""
    import torch

    from moatforge.data import render

    items = []
    for row in rows:
        titles = ticket_titles(row)
        if not titles:
            continue
        text = render(tokenizer, row["messages"], row.get("tools"))
        start = text.rfind('"title": "' + titles[0]) + len('"title": "')
        end = start + len(titles[0])
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        positions = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a >= start and b <= end and b > a]
        items.append((torch.tensor([enc["input_ids"]]), positions))
        if len(items) == limit:
            break
    return items


def title_loss(model, layers, keep: list[int], items: list[tuple]) -> float:
    """Mean negative log-likelihood of the title tokens with only the ``keep`` layers in the stack."""
    import torch

    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, positions in items:
            logprobs = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].float(), -1)
            for p in positions:
                total -= float(logprobs[p - 1, ids[0, p]])
                count += 1
    model.model.layers = layers
    return total / count


def main() -> None:
    import torch

    from moatforge.models import load_model, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", required=True, help="chat JSONL with create_ticket calls (not the eval set)")
    parser.add_argument("--block", required=True, help="comma-separated layers the block cut kept")
    parser.add_argument("--rows", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer, model = load_tokenizer(args.teacher), load_model(args.teacher).eval()
    with open(args.data, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    items = title_items(tokenizer, rows, args.rows)
    layers = model.model.layers
    every = list(range(len(layers)))
    block = [int(x) for x in args.block.split(",")]
    full = title_loss(model, layers, every, items)
    skipped = {k: title_loss(model, layers, [i for i in every if i != k], items) for k in every}
    by_copy = sorted(sorted(skipped, key=lambda k: -skipped[k])[: len(block)])
    ours, baseline = title_loss(model, layers, by_copy, items), title_loss(model, layers, block, items)
    print("title-token loss with one layer skipped:", {k: round(v, 3) for k, v in skipped.items()})
    print(
        json.dumps(
            {
                "name": "layer_copy_probe",
                "unit": "teacher's loss on ticket-title tokens after the cut, before distillation (lower is better)",
                "ours": ours,
                "baseline": baseline,
                "ratio": ours / baseline,
                "full_teacher": full,
                "copy_ranked_layers": by_copy,
                "block_layers": block,
                "rows": len(items),
            }
        )
    )


if __name__ == "__main__":
    main()
