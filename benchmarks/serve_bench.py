"""moatforge serve vs a naive one-request-at-a-time server: requests/s, generated tokens/s, p50/p99 latency.

Both sides serve the same model with the same chat template, greedy decoding and the same torch thread count,
on the same machine, and are driven by the same HTTP client at concurrency 1, 8 and 32 with the demo's
tool-calling prompts. The naive side is what people write first: FastAPI + ``model.generate`` behind a lock.
moatforge's side pays for Serve's proxy, the ingress hop and tokenization in other processes on the same cores.

    .venv/bin/python benchmarks/serve_bench.py --model smollm2-135m-instruct --max-tokens 32

The last line is one JSON object (name, unit, ours, baseline, ratio, details).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))

NAIVE_SERVER = r"""
import asyncio, sys, torch, uvicorn
from fastapi import FastAPI, Request
from moatforge.data import render
from moatforge.models import load_model, load_tokenizer, resolve_model

model_dir = resolve_model(sys.argv[1])
torch.set_num_threads(int(sys.argv[3]))
tok = load_tokenizer(model_dir)
model = load_model(model_dir).eval()
stop = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
lock = asyncio.Lock()
app = FastAPI()

def generate(body):
    prompt = render(tok, body["messages"], body.get("tools"), add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=body["max_tokens"], do_sample=False, eos_token_id=stop,
                             pad_token_id=stop[0])
    new = out[0, ids["input_ids"].shape[1]:]
    n = int(new.numel())
    return {"choices": [{"message": {"content": tok.decode(new, skip_special_tokens=True)}}],
            "usage": {"prompt_tokens": int(ids["input_ids"].shape[1]), "completion_tokens": n}}

@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    async with lock:  # one request at a time: the naive server
        return await asyncio.to_thread(generate, body)

@app.get("/health")
async def health():
    return {"ok": True}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


APP_SYSTEM_PROMPT = "You are the internal operations assistant for orders, billing, inventory and tickets."


def prompts(n: int, tools: str = "app") -> list[dict]:
    """The demo's opening user turns. ``app``: every request carries the application's whole tool list, as a
    deployed assistant sends it; ``row``: each conversation's own subset (no two prompts share much)."""
    from moatforge.sample_data import TOOLS, generate

    rows = generate(seed=3, n_train=max(n, 8), n_eval=4)[0]
    out = []
    for row in rows[:n]:
        first_user = next(i for i, m in enumerate(row["messages"]) if m["role"] == "user")
        if tools == "app":  # one application: its own system prompt and tool list on every request
            messages = [{"role": "system", "content": APP_SYSTEM_PROMPT}, row["messages"][first_user]]
            out.append({"messages": messages, "tools": TOOLS})
        else:
            out.append({"messages": row["messages"][: first_user + 1], "tools": row.get("tools")})
    return out


def wait_ready(url: str, timeout: float = 600) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def drive(url: str, model: str, convs: list[dict], concurrency: int, max_tokens: int) -> dict:
    session_local = __import__("threading").local()

    def one(conv):
        s = getattr(session_local, "s", None) or requests.Session()
        session_local.s = s
        body = {"model": model, "max_tokens": max_tokens, "temperature": 0, **conv}
        t0 = time.perf_counter()
        r = s.post(url + "/v1/chat/completions", json=body, timeout=900)
        dt = time.perf_counter() - t0
        r.raise_for_status()
        return dt, r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, convs))
    wall = time.perf_counter() - t0
    lat = sorted(dt for dt, _ in results)
    tokens = sum(n for _, n in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "wall_s": round(wall, 2),
        "req_per_s": round(len(results) / wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "p50_s": round(statistics.median(lat), 3),
        "p99_s": round(lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))], 3),
        "tokens": tokens,
    }


def run_levels(name, url, model, levels, requests_per_level, max_tokens, tools) -> list[dict]:
    drive(url, model, prompts(2, tools), 1, max_tokens)  # warm-up: first-call allocations, lazy imports
    out = []
    for c in levels:
        n = max(requests_per_level.get(c, 2 * c), c)
        r = drive(url, model, prompts(n, tools), c, max_tokens)
        r["server"] = name
        print(json.dumps(r), flush=True)
        out.append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for each server's model")
    ap.add_argument("--requests-c1", type=int, default=6)
    ap.add_argument(
        "--tools",
        choices=["app", "row"],
        default="app",
        help="app: every request sends the same full tool list (a deployed assistant); row: each row's own tools",
    )
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    per_level = {1: args.requests_c1}

    from moatforge.models import resolve_model
    from moatforge.serve.demo import free_port

    model_dir = str(resolve_model(args.model))

    # --- the naive server, alone on the machine
    port = free_port()
    naive = subprocess.Popen([sys.executable, "-c", NAIVE_SERVER, model_dir, str(port), str(args.threads)])
    try:
        wait_ready(f"http://127.0.0.1:{port}/health")
        baseline = run_levels("naive", f"http://127.0.0.1:{port}", "m", levels, per_level, args.max_tokens, args.tools)
    finally:
        naive.terminate()
        naive.wait(timeout=30)

    # --- moatforge serve on a local Ray cluster
    import ray
    from ray import serve

    from moatforge.config import load_config
    from moatforge.serve.run import deploy

    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    port = free_port()
    cfg = load_config(
        None,
        [
            f"serve.model={model_dir}",
            "serve.model_name=m",
            f"serve.port={port}",
            "serve.allow_unauthenticated=true",
            "serve.max_batch_size=32",
            f"serve.torch_threads={args.threads}",
            "serve.engine.max_ongoing_requests=64",
            "serve.engine.max_queued_requests=128",
        ],
    )
    deploy(cfg)
    try:
        ours = run_levels("moatforge", f"http://127.0.0.1:{port}", "m", levels, per_level, args.max_tokens, args.tools)
        stats = requests.get(f"http://127.0.0.1:{port}/health", timeout=30).json()["engine"]
    finally:
        serve.shutdown()
        ray.shutdown()

    print(
        f"\n{'conc':>5} | {'ours tok/s':>10} {'naive tok/s':>11} {'ratio':>6} | {'ours p50':>8} {'ours p99':>8} | "
        f"{'naive p50':>9} {'naive p99':>9} | {'ours req/s':>10} {'naive req/s':>11}"
    )
    for o, b in zip(ours, baseline, strict=True):
        print(
            f"{o['concurrency']:>5} | {o['tokens_per_s']:>10} {b['tokens_per_s']:>11} "
            f"{o['tokens_per_s'] / b['tokens_per_s']:>6.2f} | {o['p50_s']:>8} {o['p99_s']:>8} | "
            f"{b['p50_s']:>9} {b['p99_s']:>9} | {o['req_per_s']:>10} {b['req_per_s']:>11}"
        )
    top_o, top_b = ours[-1], baseline[-1]
    single = ours[0]["p50_s"]
    result = {
        "name": f"serve_tokens_per_s_c{top_o['concurrency']}_{args.tools}_tools",
        "unit": "generated tokens/s",
        "ours": top_o["tokens_per_s"],
        "baseline": top_b["tokens_per_s"],
        "ratio": round(top_o["tokens_per_s"] / top_b["tokens_per_s"], 3),
        "p99_over_single_latency": round(top_o["p99_s"] / single, 3),
        "targets": {"ratio": ">= 4", "p99_over_single_latency": "<= 3"},
        "model": args.model,
        "max_tokens": args.max_tokens,
        "tools": args.tools,
        "torch_threads": args.threads,
        "engine": stats,
        "ours_levels": ours,
        "naive_levels": baseline,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
