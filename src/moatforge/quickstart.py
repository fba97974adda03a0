"""``moatforge quickstart`` (``make demo``): sample data → LoRA fine-tune of the real SmolLM2 → accuracy before/after.

Everything runs on an embedded local Ray cluster and must finish on a 2-core CPU in under 15 minutes, so the
defaults below are sized for that; on a real cluster pass a config with more data and steps.
"""

from __future__ import annotations

import json
import time

from moatforge import storage
from moatforge.config import MoatforgeConfig, load_config
from moatforge.evaluate import evaluate_model, load_eval_rows
from moatforge.models import resolve_model
from moatforge.sample_data import write_sample_data

QUICKSTART_OVERRIDES = [
    "run.name=quickstart-teacher",
    "model.name_or_path=smollm2-135m-instruct",
    "cluster.num_workers=2",
    "data.max_seq_len=640",
    "train.zero_stage=2",
    "train.max_steps=36",
    "train.micro_batch_size=2",
    "train.grad_accum=1",
    "train.lr=1e-3",
    "train.warmup_ratio=0.1",
    "train.checkpoint_every_steps=12",
    "lora.enabled=true",
    "lora.r=16",
    "lora.alpha=32",
]
EVAL_ROWS = 40
MAX_NEW_TOKENS = 72
# Generation batches: larger batches mean fewer sequential decode steps, which dominate on a CPU.
EVAL_BATCH = 20


def quickstart_config(overrides: list[str] | None = None) -> MoatforgeConfig:
    return load_config(None, QUICKSTART_OVERRIDES + list(overrides or []))


def run_quickstart(cfg: MoatforgeConfig | None = None, printer=print) -> dict:
    from moatforge.train.run import ensure_ray, run_training

    cfg = cfg or quickstart_config()
    t0 = time.time()

    def stage(text: str) -> None:
        printer(f"\n== [{time.time() - t0:6.1f}s] {text}")

    home = storage.join(storage.absolute(cfg.run.storage_path), "quickstart")
    stage("1/4 generating the sample tool-calling data set (train + held-out eval)")
    paths = write_sample_data(storage.join(home, "data"), seed=cfg.train.seed, n_train=400, n_eval=EVAL_ROWS)
    cfg.data.train = cfg.data.train or str(paths["train"])
    cfg.data.eval = cfg.data.eval or str(paths["eval"])
    eval_rows = load_eval_rows(str(paths["eval"]), EVAL_ROWS)
    printer(f"   train: {paths['train']}\n   eval:  {paths['eval']} ({len(eval_rows)} rows)")

    stage(f"2/4 evaluating the base model {cfg.model.name_or_path} on the held-out set")
    base_dir = resolve_model(cfg.model.name_or_path)
    base = evaluate_model(base_dir, eval_rows, MAX_NEW_TOKENS, EVAL_BATCH, with_loss=False)
    printer(f"   base tool-call accuracy: {base['tool_call_accuracy']:.1%}")

    stage(f"3/4 LoRA fine-tuning on Ray Train + DeepSpeed ZeRO-{cfg.train.zero_stage} ({cfg.train.max_steps} steps)")
    ensure_ray(cfg.cluster.address)
    summary = run_training(cfg, printer=printer)

    stage("4/4 evaluating the fine-tuned model on the held-out set")
    tuned = evaluate_model(summary["final_model"], eval_rows, MAX_NEW_TOKENS, EVAL_BATCH, with_loss=False)

    results = {"base": _row(base), "teacher": _row(tuned), "train_summary": summary}
    storage.write_text(storage.join(home, "results.json"), json.dumps(results, indent=2) + "\n")
    printer("\n" + results_table(results))
    printer(f"\nresults: {storage.join(home, 'results.json')}\nfine-tuned model: {summary['final_model']}")
    printer(f"done in {time.time() - t0:.0f}s")
    return results


def _row(result: dict) -> dict:
    keys = ("tool_call_accuracy", "unparseable_rate", "loss", "latency_s_mean", "tokens_per_s", "n", "params")
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
