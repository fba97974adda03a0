"""Training throughput: `moatforge train` (2 Ray workers, DeepSpeed ZeRO-2 by default) against a bare DDP loop.

Both sides train the same small Llama (built from a config, real SmolLM2 vocabulary) on the same encoded
rows with the same global batch and the same token-normalised loss, on 2 processes over gloo, in this one
script. Throughput is target-and-context tokens per second over the steps after a warmup, so start-up
(Ray, DeepSpeed init, JIT build) is excluded on both sides.

    .venv/bin/python benchmarks/train_throughput.py [--steps 12] [--warmup 3] [--zero-stage 2]

The bare loop runs twice, before and after ours, with the same idle Ray cluster up (a 2-core machine feels
Ray's daemons; both sides should), and its mean is the baseline; ``--baseline-without-ray`` runs it once
with no Ray, as the first recorded numbers were measured.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _encoded_rows(model_dir: Path, n: int):
    from moatforge.data import encode_example
    from moatforge.models import load_tokenizer
    from moatforge.sample_data import generate

    tok = load_tokenizer(model_dir)
    rows = generate(seed=0, n_train=n, n_eval=5)[0]
    return [encode_example(tok, r, 1024) for r in rows], tok.pad_token_id


def _ddp_worker(rank: int, world: int, model_dir: str, rows, pad_id, args, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from moatforge.data import collate
    from moatforge.models import load_model
    from moatforge.train.loop import count_targets, forward_loss_sum

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = DDP(load_model(model_dir))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    mine = rows[rank::world]
    micro = args.micro_batch_size
    times, tokens = [], []
    cursor = 0
    for step in range(args.steps):
        t0 = time.perf_counter()
        batches = []
        for _ in range(args.grad_accum):
            chunk = [mine[(cursor + i) % len(mine)] for i in range(micro)]
            cursor += micro
            batches.append(collate([e.input_ids for e in chunk], [e.labels for e in chunk], pad_id))
        counts = torch.tensor(
            [sum(count_targets(b) for b in batches), sum(int(b["attention_mask"].sum()) for b in batches)],
            dtype=torch.float64,
        )
        dist.all_reduce(counts)
        for k, b in enumerate(batches):
            ctx = model.no_sync() if k < len(batches) - 1 else torch.enable_grad()
            with ctx:
                # The same sparse-logits loss as moatforge, so the comparison isolates the training stack.
                loss = forward_loss_sum(model, b, "cpu") * world / counts[0]
                loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            tokens.append(float(counts[1]))
    if rank == 0:
        Path(out).write_text(json.dumps({"tokens_per_s": sum(tokens) / sum(times)}))
    dist.destroy_process_group()


def run_baseline(model_dir: Path, args) -> float:
    import socket

    import torch.multiprocessing as mp

    rows, pad_id = _encoded_rows(model_dir, 256)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mktemp(suffix=".json")
    mp.spawn(_ddp_worker, args=(2, str(model_dir), rows, pad_id, args, port, out), nprocs=2, join=True)
    return json.loads(Path(out).read_text())["tokens_per_s"]


def run_ours(model_dir: Path, data: Path, storage: Path, args) -> float:
    from moatforge.config import load_config
    from moatforge.train.run import read_metrics, run_training

    cfg = load_config(
        None,
        [
            "run.name=bench",
            f"run.storage_path={storage}",
            f"model.name_or_path={model_dir}",
            f"data.train={data}",
            "data.shuffle=false",
            "cluster.num_workers=2",
            f"train.zero_stage={args.zero_stage}",
            f"train.max_steps={args.steps}",
            f"train.micro_batch_size={args.micro_batch_size}",
            f"train.grad_accum={args.grad_accum}",
            "train.lr=1e-4",
            "train.checkpoint_every_steps=100000",
        ],
    )
    run_training(cfg, printer=lambda *_: None)
    steps = read_metrics(str(storage / "bench"))[args.warmup :]
    faults = sum(m["page_faults"] for m in steps) / len(steps)
    return sum(m["tokens"] for m in steps) / sum(m["step_time_s"] for m in steps), faults


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    parser.add_argument(
        "--baseline-without-ray",
        action="store_true",
        help="run the bare loop once, before Ray starts (the session-1 method)",
    )
    args = parser.parse_args()

    import ray

    from moatforge.models import create_tiny_model
    from moatforge.sample_data import write_sample_data

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model_dir = create_tiny_model(tmp_path / "model", hidden_size=args.hidden, layers=args.layers)
        data = write_sample_data(tmp_path / "data", seed=0, n_train=256, n_eval=5)["train"]
        if args.baseline_without_ray:
            baselines = [run_baseline(model_dir, args)]
            ray.init(num_cpus=4, include_dashboard=False, configure_logging=False)
            ours, faults = run_ours(model_dir, data, tmp_path / "runs", args)
        else:
            # The same machine state for both sides: Ray's daemons (raylet, GCS, metrics agent) are up while the
            # bare loop runs too, and the bare loop runs before and after ours so that drift averages out.
            ray.init(num_cpus=4, include_dashboard=False, configure_logging=False)
            baselines = [run_baseline(model_dir, args)]
            ours, faults = run_ours(model_dir, data, tmp_path / "runs", args)
            baselines.append(run_baseline(model_dir, args))
        ray.shutdown()
    baseline = sum(baselines) / len(baselines)
    result = {
        "name": f"train_throughput_zero{args.zero_stage}_vs_ddp",
        "unit": "tokens/s",
        "ours": round(ours, 1),
        "baseline": round(baseline, 1),
        "ratio": round(ours / baseline, 3),
        "model": f"llama hidden={args.hidden} layers={args.layers} vocab=49152",
        "workers": 2,
        "global_batch": 2 * args.micro_batch_size * args.grad_accum,
        "steps_measured": args.steps - args.warmup,
        "baseline_runs": [round(b, 1) for b in baselines],
        "baseline_with_ray_running": not args.baseline_without_ray,
        "ours_page_faults_per_step": round(faults),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
