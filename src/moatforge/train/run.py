"""The driver side of ``moatforge train``: validate, prepare data, launch the TorchTrainer, write the run files."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from pathlib import Path

from moatforge import storage
from moatforge.config import MoatforgeConfig
from moatforge.data import list_data_files, prepare_dataset
from moatforge.errors import MoatforgeError
from moatforge.metrics import metrics_flush_seconds
from moatforge.models import resolve_model
from moatforge.train.ds_config import total_steps
from moatforge.train.loop import ATTEMPTS_FILE, METRICS_FILE, train_loop_per_worker


def ensure_ray(address: str | None = None) -> None:
    """Join the cluster named by ``cluster.address`` or RAY_ADDRESS (ray job submit), else start one here."""
    import logging

    import ray
    import ray.data

    # Ray Data's per-operator progress logging buries the one progress line per step that users read.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if ray.is_initialized():
        return
    ray.init(address=address, log_to_driver=True, configure_logging=False)


def validate_inputs(cfg: MoatforgeConfig) -> None:
    """Fail before any compute is spent: missing data or model is one clear line."""
    if not cfg.data.train:
        raise MoatforgeError("data.train is not set: pass data.train=PATH (a JSONL/Parquet file or folder)")
    list_data_files(cfg.data.train)
    if cfg.data.eval:
        list_data_files(cfg.data.eval)


def read_metrics(run_dir: str) -> list[dict]:
    text = storage.read_text(storage.join(run_dir, METRICS_FILE)) or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_attempts(run_dir: str) -> list[dict]:
    text = storage.read_text(storage.join(run_dir, ATTEMPTS_FILE)) or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Progress(threading.Thread):
    """Tails metrics.jsonl from storage and prints one line per step on the driver."""

    def __init__(self, run_dir: str, total: int, printer=print, interval: float = 2.0):
        super().__init__(daemon=True)
        self.run_dir, self.total, self.printer, self.interval = run_dir, total, printer, interval
        self.stop_event = threading.Event()
        self.last_step = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        try:
            metrics = read_metrics(self.run_dir)
        except (ValueError, OSError):
            return
        for m in metrics:
            if m["step"] > self.last_step:
                self.last_step = m["step"]
                self.printer(format_progress(m, self.total, metrics))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
        self.poll()


def format_progress(m: dict, total: int, history: list[dict]) -> str:
    recent = [h["step_time_s"] for h in history[-10:] if "step_time_s" in h]
    eta = (total - m["step"]) * (sum(recent) / len(recent)) if recent else math.nan
    eta_text = f"{int(eta // 60)}m{int(eta % 60):02d}s" if not math.isnan(eta) else "?"
    line = (
        f"[train] step {m['step']}/{total}  loss {m['loss']:.4f}  lr {m['lr']:.2e}  "
        f"tok/s {m['tokens_per_s']:.0f}  ETA {eta_text}"
    )
    if "eval_loss" in m:
        line += f"  eval_loss {m['eval_loss']:.4f}"
    if m.get("cost_usd") is not None:
        line += f"  ${m['cost_usd']:.4f}"
    return line


def model_label(ref: str) -> str:
    """A short, bounded metrics label for a model reference: an alias, a run name, or a folder name."""
    path = Path(ref)
    if len(path.parts) >= 3 and path.parts[-2:] == ("final", "model"):
        return path.parts[-3]
    return path.name or ref


def run_training(
    cfg: MoatforgeConfig, printer=print, objective=None, transform_train=None, stage: str = "train"
) -> dict:
    """Fine-tune ``model.name_or_path``; distillation passes its ``objective`` (the loss, see
    ``loop.NextTokenLoss``) and ``transform_train`` (adds the teacher's outputs to the prepared rows)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    validate_inputs(cfg)
    model_dir = str(resolve_model(cfg.model.name_or_path))
    storage_path = storage.absolute(cfg.run.storage_path)
    run_dir = storage.join(storage_path, cfg.run.name)
    storage.write_text(storage.join(run_dir, "config.yaml"), cfg.to_yaml())
    ensure_ray(cfg.cluster.address)

    started = time.time()
    prep_args = (model_dir, cfg.model.chat_template, cfg.data.max_seq_len, cfg.data.overlong, cfg.data.packing)
    train_data = prepare_dataset(cfg.data.train, *prep_args, role="train")
    datasets = {"train": train_data.dataset}
    eval_data = None
    if cfg.data.eval:
        eval_data = prepare_dataset(cfg.data.eval, *prep_args, role="eval")
        datasets["eval"] = eval_data.dataset
    workers = cfg.cluster.num_workers
    if train_data.rows < workers:
        raise MoatforgeError(
            f"data.train has {train_data.rows} usable rows, fewer than cluster.num_workers={workers}; "
            "add data or lower cluster.num_workers"
        )
    steps = total_steps(cfg.train, train_data.rows // workers)
    if transform_train is not None:
        # Only the rows the steps will consume: a short run over a big set must not pay for all of it.
        consumed = steps * cfg.train.micro_batch_size * cfg.train.grad_accum * workers
        datasets["train"] = transform_train(train_data.dataset, run_dir, min(train_data.rows, consumed))
    printer(
        f"[train] {train_data.rows} training rows ({_skipped(train_data.counts)}), {train_data.tokens} tokens; "
        f"{steps} steps on {workers} workers, ZeRO-{cfg.train.zero_stage}, "
        f"{'LoRA' if cfg.lora.enabled else 'full'} fine-tune of {cfg.model.name_or_path}"
    )

    invocation = uuid.uuid4().hex
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "model_dir": model_dir,
            "run_dir": run_dir,
            "total_steps": steps,
            "has_eval": eval_data is not None,
            "invocation": invocation,
            "objective": objective,
            "stage": stage,
            "model_name": model_label(cfg.model.name_or_path),
            # Rank 0 outlives its last step by one metrics export when the cluster outlives the run.
            "metrics_flush_s": metrics_flush_seconds(cfg.cluster.address),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=cfg.cluster.use_gpu,
            resources_per_worker={"CPU": cfg.cluster.cpus_per_worker, **({"GPU": 1} if cfg.cluster.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        ),
        datasets=datasets,
    )
    progress = Progress(run_dir, steps, printer)
    progress.start()
    error = None
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps worker failures; the summary must be written either way
        error = exc
    finally:
        progress.stop()
    summary = _summary(cfg, run_dir, invocation, started, steps, train_data, eval_data, error)
    storage.write_text(storage.join(run_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    if summary["status"] == "stopped_budget":
        raise MoatforgeError(
            f"{stage} run {cfg.run.name} stopped at step {summary['steps']}/{steps}: its projected cost "
            f"${summary['projected_cost_usd']:.4f} exceeds cost.budget_usd={cfg.cost.budget_usd} "
            f"(spent ${summary['cost_usd']:.4f}); a checkpoint was saved: raise cost.budget_usd and re-run the "
            "same command to continue"
        )
    if error is not None:
        raise MoatforgeError(
            f"training run {cfg.run.name} failed after {summary['restarts']} restarts: "
            f"{_first_line(error)} (re-run the same command to resume from {run_dir})"
        ) from error
    return summary


def _summary(cfg, run_dir, invocation, started, steps, train_data, eval_data, error) -> dict:
    metrics = read_metrics(run_dir)
    attempts = [a for a in read_attempts(run_dir) if a["invocation"] == invocation]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    last = metrics[-1] if metrics else {}
    status = "failed" if error is not None else "stopped_budget" if last.get("stopped") == "budget" else "finished"
    mfus = [m["mfu"] for m in metrics if m.get("mfu") is not None]
    return {
        "status": status,
        "run_name": cfg.run.name,
        "run_dir": run_dir,
        "steps": metrics[-1]["step"] if metrics else 0,
        "total_steps": steps,
        "restarts": max(0, len(attempts) - 1),
        "resumed_from_steps": [a["start_step"] for a in attempts if a["start_step"] > 0],
        "final_loss": metrics[-1]["loss"] if metrics else None,
        "final_eval_loss": evals[-1] if evals else None,
        "tokens": sum(m["tokens"] for m in metrics),
        "wall_time_s": time.time() - started,
        "train_rows": train_data.rows,
        "train_row_counts": train_data.counts,
        "eval_row_counts": eval_data.counts if eval_data else None,
        "cost_usd": last.get("cost_usd"),
        "projected_cost_usd": last.get("projected_cost_usd"),
        "usd_per_1m_tokens": last.get("usd_per_1m_tokens"),
        "goodput": last.get("goodput"),
        "mfu_mean": sum(mfus) / len(mfus) if mfus else None,
        "final_model": storage.join(run_dir, "final", "model") if status == "finished" else None,
        "final_adapter": storage.join(run_dir, "final", "adapter")
        if status == "finished" and cfg.lora.enabled
        else None,
        "error": _first_line(error) if error is not None else None,
    }


def _skipped(counts: dict[str, int]) -> str:
    skipped = {k: v for k, v in counts.items() if k != "ok"}
    return "none skipped" if not skipped else "skipped " + ", ".join(f"{v} {k}" for k, v in sorted(skipped.items()))


def _first_line(exc: BaseException | None) -> str:
    """The headline of a (possibly wrapped, multi-line) Ray error plus its root cause line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] if exc is not None else []
    if not lines:
        return type(exc).__name__
    cause = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), lines[-1])
    return (lines[0] if cause == lines[0] else f"{lines[0]} {cause}")[:400]
