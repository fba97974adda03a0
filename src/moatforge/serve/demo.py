"""The demo's last stage: deploy a model locally, call it with the ``openai`` client as an application would, stop.

A throwaway API key is generated for the run, so the demo exercises the same authenticated path as production
instead of switching auth off.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

DEMO_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up the status of a customer order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_ticket",
            "description": "Open a support ticket",
            "parameters": {
                "type": "object",
                "properties": {
                    "subject": {"type": "string"},
                    "priority": {"type": "string", "enum": ["low", "normal", "high"]},
                },
                "required": ["subject"],
            },
        },
    },
]

DEMO_REQUESTS = [
    "Where is my order A-1042?",
    "Please open a high priority ticket: the invoice PDF is blank.",
    "What's the status of order B-7?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_query(
    model_dir: str,
    requests: list[str] | None = None,
    printer=print,
    tools: list[dict] | None = None,
    port: int | None = None,
    max_tokens: int = 64,
) -> list[dict]:
    """Deploy ``model_dir`` on the running Ray cluster, send tool-calling chats, print them, shut down."""
    from openai import OpenAI
    from ray import serve

    from moatforge.config import load_config
    from moatforge.serve.run import deploy

    key = "sk-demo-" + secrets.token_hex(16)
    port = port or free_port()
    cfg = load_config(None, [f"serve.model={model_dir}", "serve.model_name=student", f"serve.port={port}"])
    cfg.serve.app_name = "moatforge-demo"

    previous = os.environ.get("MOATFORGE_API_KEYS")
    os.environ["MOATFORGE_API_KEYS"] = key  # read where the app is built; only its digest reaches the replicas
    try:
        url = deploy(cfg, printer)
    finally:
        if previous is None:
            os.environ.pop("MOATFORGE_API_KEYS", None)
        else:
            os.environ["MOATFORGE_API_KEYS"] = previous
    client = OpenAI(base_url=url, api_key=key, max_retries=2, timeout=120)
    answers = []
    try:
        for text in requests or DEMO_REQUESTS:
            t0 = time.perf_counter()
            reply = client.chat.completions.create(
                model="student",
                messages=[{"role": "user", "content": text}],
                tools=tools or DEMO_TOOLS,
                max_tokens=max_tokens,
                temperature=0,
            )
            choice = reply.choices[0]
            calls = [
                {"name": c.function.name, "arguments": c.function.arguments} for c in choice.message.tool_calls or []
            ]
            answer = {
                "request": text,
                "content": choice.message.content,
                "tool_calls": calls,
                "finish_reason": choice.finish_reason,
                "latency_s": round(time.perf_counter() - t0, 3),
                "completion_tokens": reply.usage.completion_tokens,
            }
            answers.append(answer)
            printer(f"   user: {text}")
            for call in calls:
                printer(f"   -> tool call {call['name']}({call['arguments']})")
            if choice.message.content:
                printer(f"   -> {choice.message.content}")
            printer(f"      ({answer['finish_reason']}, {answer['completion_tokens']} tokens, {answer['latency_s']}s)")
    finally:
        serve.delete(cfg.serve.app_name)
        serve.shutdown()
        printer("   served app shut down")
    return answers
