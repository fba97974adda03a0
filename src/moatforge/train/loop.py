"""The Ray Train worker: one DeepSpeed engine per worker, fed from its Ray Data shard.

The loss of a step is the sum of token losses over the whole global batch divided by the global count of
target tokens (all-reduced before the first micro-batch). That makes a step's gradient independent of how
rows fall across workers and micro-batches, so 2 workers under any ZeRO stage match one process exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from moatforge import storage
from moatforge.config import MoatforgeConfig
from moatforge.data import IGNORE_INDEX, collate
from moatforge.train import checkpoint as ckpt_io
from moatforge.train.ds_config import build_deepspeed_config, lr_factor, warmup_steps

METRICS_FILE = "metrics.jsonl"
ATTEMPTS_FILE = "attempts.jsonl"


# Per-token columns that ride along with rows (the offline teacher's top-k for distillation); a micro-batch
# concatenates them in row order, which is the order target_logits() returns target positions in.
FLAT_COLUMNS = ("kd_ids", "kd_logprobs", "kd_log_tail")


def collate_rows(batch: dict, pad_id: int) -> dict[str, np.ndarray]:
    out = collate(list(batch["input_ids"]), list(batch["labels"]), pad_id)
    for name in FLAT_COLUMNS:
        if name in batch:
            out[name] = np.concatenate([np.asarray(x) for x in batch[name]])
    return out


def micro_batches(shard, micro_batch_size: int, pad_id: int, seed: int, shuffle: bool):
    """Endless micro-batches: epochs follow each other so a step never stops short at an epoch edge."""
    epoch = 0
    while True:
        kwargs = {"local_shuffle_buffer_size": 256, "local_shuffle_seed": seed + epoch} if shuffle else {}
        for batch in shard.iter_batches(batch_size=micro_batch_size, batch_format="numpy", **kwargs):
            yield collate_rows(batch, pad_id)
        epoch += 1


def target_logits(model, batch: dict, device):
    """Output logits at the positions that have a target, as ``[targets, vocab]``, with those targets.

    Chat rows carry loss on assistant replies only, a small share of their tokens; skipping the vocabulary
    projection elsewhere (``logits_to_keep``) saves most of the LM head's work and gives the same loss.
    Rows come out in order, each row's positions ascending.
    """
    labels = torch_from(batch["labels"], device)
    targets = labels[:, 1:]
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    logits = model(
        input_ids=torch_from(batch["input_ids"], device),
        attention_mask=torch_from(batch["attention_mask"], device),
        logits_to_keep=keep,
    ).logits
    kept = targets[:, keep]
    mask = kept != IGNORE_INDEX
    return logits[mask], kept[mask]


def forward_loss_sum(model, batch: dict, device):
    """Summed next-token loss over the batch's target tokens."""
    import torch.nn.functional as F

    logits, targets = target_logits(model, batch, device)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


class NextTokenLoss:
    """The fine-tuning objective. Distillation passes its own object with the same two methods, so the
    worker loop (data, DeepSpeed, checkpoints, resume, export) is shared instead of forked."""

    def setup(self, cfg: MoatforgeConfig, device, ds_config: dict) -> None:
        pass

    def __call__(self, engine, batch: dict, device):
        """Summed loss over the batch's targets, and summed named parts worth logging."""
        return forward_loss_sum(engine, batch, device), {}


def torch_from(array, device):
    import torch

    return torch.from_numpy(array).to(device)


def count_targets(batch) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def build_model(cfg: MoatforgeConfig, model_dir: str, ds_config: dict):
    import torch

    from moatforge.models import load_model
    from moatforge.train.export import peft_config

    keep_alive = None
    if cfg.train.zero_stage == 3:
        import deepspeed

        # DeepSpeed must see Ray Train's process group before its config checks the world size.
        deepspeed.init_distributed(dist_backend="nccl" if cfg.cluster.use_gpu else "gloo")
        # Lets from_pretrained partition weights as it loads (zero.Init) instead of holding a full copy per rank.
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)
    model = load_model(model_dir, dtype=torch.bfloat16 if cfg.cluster.use_gpu else torch.float32)
    model.config.use_cache = False
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora.enabled:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(cfg.lora, model_dir))
    return model, keep_alive


def minor_page_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def train_loop_per_worker(loop_config: dict) -> None:
    import deepspeed  # imported inside the worker: it probes accelerators at import time
    import ray.train
    import torch
    import torch.distributed as dist
    from torch.optim.lr_scheduler import LambdaLR

    from moatforge.models import load_tokenizer
    from moatforge.train.export import export_final, gather_state_dict

    cfg = MoatforgeConfig.model_validate(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not cfg.cluster.use_gpu:
        torch.set_num_threads(cfg.cluster.torch_threads or max(1, int(cfg.cluster.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)

    model_dir = loop_config["model_dir"]
    run_dir = loop_config["run_dir"]
    total = loop_config["total_steps"]
    tokenizer = load_tokenizer(model_dir, cfg.model.chat_template)
    ds_config = build_deepspeed_config(cfg.train, world, cfg.cluster.use_gpu)
    model, zero3_init = build_model(cfg, model_dir, ds_config)
    warmup = warmup_steps(cfg.train, total)
    schedule = partial(lr_factor, total_steps=total, warmup=warmup, min_ratio=cfg.train.min_lr_ratio)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
        lr_scheduler=lambda opt: LambdaLR(opt, schedule),
    )
    device = engine.device
    del zero3_init  # loading is done; later model builds (the export) must not be partitioned

    invocation = loop_config["invocation"]
    start_step, history, elapsed_before, cost_before = 0, [], 0.0, 0.0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = ckpt_io.load(engine, Path(d), strict=not cfg.lora.enabled)
        start_step, history, elapsed_before = state["step"], state["metrics"], state["elapsed_s"]
        # Cost of earlier invocations (a re-run after a stop); this invocation's is billed from its wall time.
        same = state.get("invocation") == invocation
        cost_before = state.get("cost_before_invocation", 0.0) if same else state.get("cost_usd", 0.0)
    recorder = None
    if rank == 0:
        since, first_step = _record_attempt(run_dir, invocation, start_step)
        recorder = make_recorder(cfg, loop_config, engine)
        if checkpoint:
            recorder.restart()
        _write_metrics(run_dir, history)

    train_shard = ray.train.get_dataset_shard("train")
    eval_shard = ray.train.get_dataset_shard("eval") if loop_config["has_eval"] else None
    objective = loop_config.get("objective") or NextTokenLoss()
    objective.setup(cfg, device, ds_config)
    stream = micro_batches(
        train_shard, cfg.train.micro_batch_size, tokenizer.pad_token_id, cfg.train.seed, cfg.data.shuffle
    )
    for _ in range(start_step * cfg.train.grad_accum):
        next(stream)  # skip what the checkpoint already trained on

    def all_sum(values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def evaluate() -> float | None:
        engine.eval()
        loss_sum, targets = 0.0, 0
        with torch.no_grad():
            for batch in eval_shard.iter_batches(batch_size=cfg.train.micro_batch_size, batch_format="numpy"):
                b = collate_rows(batch, tokenizer.pad_token_id)
                loss_sum += float(forward_loss_sum(engine, b, device))
                targets += count_targets(b)
        engine.train()
        total_loss, total_targets = all_sum([loss_sum, float(targets)])
        return total_loss / total_targets if total_targets else None

    def save(step: int, metrics: dict) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="moatforge-ckpt-"))
        try:
            state = {
                "step": step,
                "metrics": history,
                "elapsed_s": elapsed_before + time.time() - t_start,
                "invocation": invocation,
                "cost_before_invocation": cost_before,
                "cost_usd": metrics.get("cost_usd", cost_before),
            }
            t0 = time.time()
            ckpt_io.save(engine, tmp, state, rank, frozen_excluded=cfg.lora.enabled)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
            if recorder is not None:
                recorder.checkpoint(time.time() - t0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    t_start = time.time()
    last_write = 0.0
    engine.train()
    metrics: dict = {"step": start_step}
    for step in range(start_step, total):
        t0, faults0 = time.time(), minor_page_faults()
        batches = [next(stream) for _ in range(cfg.train.grad_accum)]
        local_targets = sum(count_targets(b) for b in batches)
        local_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        global_targets, global_tokens = all_sum([float(local_targets), float(local_tokens)])
        scale = world * cfg.train.grad_accum / max(global_targets, 1.0)
        lr = engine.get_lr()[0]
        step_loss_sum, step_parts = 0.0, {}
        for b in batches:
            loss_sum, parts = objective(engine, b, device)
            engine.backward(loss_sum * scale)
            engine.step()
            step_loss_sum += float(loss_sum.detach())
            for name, value in parts.items():
                step_parts[name] = step_parts.get(name, 0.0) + value
        part_names = sorted(step_parts)
        total_loss_sum, *part_sums = all_sum([step_loss_sum] + [step_parts[n] for n in part_names])
        dt = time.time() - t0
        metrics = {
            "step": step + 1,
            "loss": total_loss_sum / max(global_targets, 1.0),
            **{n: v / max(global_targets, 1.0) for n, v in zip(part_names, part_sums, strict=True)},
            "lr": lr,
            "tokens": int(global_tokens),
            "tokens_per_s": global_tokens / dt if dt > 0 else 0.0,
            "step_time_s": dt,
            "elapsed_s": elapsed_before + time.time() - t_start,
            "page_faults": minor_page_faults() - faults0,  # this worker's fresh pages, zeroed by the kernel
        }
        is_last = step + 1 == total
        if eval_shard is not None and (
            is_last or (cfg.train.eval_every_steps and (step + 1) % cfg.train.eval_every_steps == 0)
        ):
            eval_loss = evaluate()
            if eval_loss is not None:
                metrics["eval_loss"] = eval_loss
        stop = 0.0
        if recorder is not None:
            productive = sum(h["step_time_s"] for h in history if h["step"] > first_step) + dt
            metrics.update(
                recorder.step(
                    tokens=int(global_tokens),
                    samples=world * cfg.train.grad_accum * cfg.train.micro_batch_size,
                    step_time=dt,
                    loss=metrics["loss"],
                    wall_s=time.time() - since,
                    productive_s=productive,
                    cost_before=cost_before,
                    steps_done=step + 1,
                    total_steps=total,
                    tokens_total=sum(h["tokens"] for h in history) + int(global_tokens),
                )
            )
            stop = float(not is_last and recorder.over_budget(metrics["projected_cost_usd"]))
        if cfg.cost.budget_usd is not None:
            (stop,) = all_sum([stop])  # rank 0 decides; every rank must leave the loop together
        if stop:
            metrics["stopped"] = "budget"
        history.append(metrics)
        if rank == 0 and (is_last or stop or time.time() - last_write > 1.0):
            _write_metrics(run_dir, history)
            last_write = time.time()
        if is_last or stop or (step + 1) % cfg.train.checkpoint_every_steps == 0:
            save(step + 1, metrics)
        if stop:
            return  # the driver reads "stopped" and explains; the checkpoint lets a re-run continue

    state_dict = gather_state_dict(engine, cfg.train.zero_stage, rank)
    if rank == 0:
        _write_metrics(run_dir, history)
        export_final(state_dict, Path(model_dir), tokenizer, cfg.lora, run_dir)
        time.sleep(loop_config.get("metrics_flush_s", 0.0))  # the last step's metrics reach the agent
    dist.barrier()


def _write_metrics(run_dir: str, history: list[dict]) -> None:
    storage.write_text(storage.join(run_dir, METRICS_FILE), "".join(json.dumps(m) + "\n" for m in history))


def _record_attempt(run_dir: str, invocation: str, start_step: int) -> tuple[float, int]:
    """Append this attempt; returns when this invocation's first attempt started and from which step."""
    path = storage.join(run_dir, ATTEMPTS_FILE)
    previous = storage.read_text(path) or ""
    now = time.time()
    line = json.dumps({"invocation": invocation, "start_step": start_step, "time": now, "pid": os.getpid()})
    storage.write_text(path, previous + line + "\n")
    mine = [json.loads(x) for x in previous.splitlines() if x.strip() and json.loads(x)["invocation"] == invocation]
    first = mine[0] if mine else {"time": now, "start_step": start_step}
    return first["time"], first["start_step"]


def make_recorder(cfg: MoatforgeConfig, loop_config: dict, engine):
    """Rank 0's metrics recorder: what this run holds, what that costs, and what its FLOPs are worth."""
    from moatforge.metrics import Resources, TrainRecorder, detect_accelerator, train_flops_per_token

    # Under ZeRO-3 a parameter's local numel is its shard; ds_numel is the whole.
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in engine.module.parameters()]
    params, trainable = sum(n for n, _ in sizes), sum(n for n, grad in sizes if grad)
    resources = Resources(
        workers=cfg.cluster.num_workers,
        cpus_per_worker=cfg.cluster.cpus_per_worker,
        accelerator=cfg.cost.accelerator or detect_accelerator(cfg.cluster.use_gpu),
    )
    return TrainRecorder(
        labels={"run": cfg.run.name, "stage": loop_config.get("stage", "train"), "model": loop_config["model_name"]},
        resources=resources,
        prices=cfg.cost.prices,
        flops_per_token=train_flops_per_token(params, trainable),
        cpu_peak_flops_per_core=cfg.cost.cpu_peak_flops_per_core,
        budget_usd=cfg.cost.budget_usd,
    )
