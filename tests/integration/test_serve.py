"""The OpenAI-compatible Serve app, live on the session's Ray cluster, called with the real ``openai`` client.

The base model is a tiny *scripted* Llama: attention and MLP outputs are zeroed and an untied LM head maps each
token to the next one of a fixed script, so greedy decoding emits a real tool call without any training (a random
model never would, and training one here would cost minutes). Two LoRA adapters with random weights change the
output, which is what adapter selection needs to show; their expected outputs come from plain peft + transformers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import time

import pytest

openai = pytest.importorskip("openai")
requests = pytest.importorskip("requests")

KEY = "sk-test-" + "0" * 16
APP = "moatforge-test"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "now", "description": "Current time", "parameters": {}}},
]
# After "assistant\n" the script emits a call to `now`; after the forced prefix of tool_choice=weather it emits
# the arguments. Both token chains have no token with two different successors, so a bigram model can follow them.
AUTO_SCRIPT = '<tool_call>{"name":"now"}'
NAMED_PREFIX = '<tool_call>{"name": "weather", "arguments": '
NAMED_SCRIPT = ' {"city": "Paris"}}'
MAX_BODY = 64 * 1024


def _scripted_model(out_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from moatforge.models import create_tiny_model, load_tokenizer

    create_tiny_model(out_dir, hidden_size=128, layers=2)
    tok = load_tokenizer(out_dir)
    model = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32)
    model.config.tie_word_embeddings = False
    emb = model.get_input_embeddings().weight.detach()
    model.lm_head = torch.nn.Linear(emb.shape[1], emb.shape[0], bias=False)
    model.lm_head.weight.data.zero_()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        # The final RMSNorm turns the residual (= the token's embedding) into a ~unit-RMS vector u_t; row v of the
        # head holds u_t for each scripted transition t -> v, so logit(v | t) = |u_t|^2 dominates.
        normed = model.model.norm(emb)
        im_end = tok.convert_tokens_to_ids("<|im_end|>")

        def ids(text: str) -> list[int]:
            return tok(text, add_special_tokens=False)["input_ids"]

        # Chains start at the prompt's last token: "\n" of "<|im_start|>assistant\n", or the forced prefix's end.
        chains = [
            [ids("assistant\n")[-1], *ids(AUTO_SCRIPT), im_end],
            [ids("assistant\n" + NAMED_PREFIX)[-1], *ids(NAMED_SCRIPT), im_end],
        ]
        successor: dict[int, int] = {}
        for chain in chains:
            for a, b in zip(chain, chain[1:], strict=False):
                assert successor.get(a, b) == b, f"script token {tok.convert_ids_to_tokens([a])} is ambiguous"
                successor[a] = b
        for a, b in successor.items():
            model.lm_head.weight[b] += normed[a]
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _random_adapter(base_dir, out_dir, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    from moatforge.models import load_model

    torch.manual_seed(seed)
    model = get_peft_model(
        load_model(base_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "down_proj"], init_lora_weights=False),
    )
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base = _scripted_model(root / "base")
    return {
        "base": base,
        "alpha": _random_adapter(base, root / "alpha", 1),
        "beta": _random_adapter(base, root / "beta", 2),
    }


@pytest.fixture(scope="module")
def server(ray_cluster, models):
    from ray import serve

    from moatforge.serve import build_app
    from moatforge.serve.demo import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    os.environ["MOATFORGE_API_KEYS"] = KEY
    try:
        app = build_app(
            {
                "model": str(models["base"]),
                "model_name": "tiny",
                "adapters": {"alpha": str(models["alpha"]), "beta": str(models["beta"])},
                "max_batch_size": 8,
                "max_context": 256,
                "max_body_bytes": MAX_BODY,
                "torch_threads": 1,
                "engine": {"max_ongoing_requests": 8, "max_queued_requests": 4, "num_cpus": 1},
                "ingress": {"num_cpus": 0.5},
            }
        )
    finally:
        os.environ.pop("MOATFORGE_API_KEYS", None)
    serve.run(app, name=APP, route_prefix="/")
    base_url = f"http://127.0.0.1:{port}"
    yield base_url
    # The demo-helper test may already have shut Serve down; either way nothing is left for later modules.
    with contextlib.suppress(Exception):
        serve.delete(APP)
    serve.shutdown()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _chat(client, **kw):
    kw.setdefault("model", "tiny")
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(**kw)


def _post(server, path, body, key=KEY, raw: bytes | None = None):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"} if key else {}
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(server + path, data=data, headers=headers, timeout=60)


def _expected(models, adapter: str | None, prompt_ids: list[int], n: int) -> str:
    """Greedy continuation computed with plain transformers (+ peft), no server involved."""
    import torch
    from peft import PeftModel

    from moatforge.models import load_model, load_tokenizer

    tok = load_tokenizer(models["base"])
    model = load_model(models["base"])
    if adapter:
        model = PeftModel.from_pretrained(model, str(models[adapter]))
    model.eval()
    with torch.no_grad():
        stop = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
        out = model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, eos_token_id=stop, pad_token_id=stop[0]
        )
    return tok.decode(out[0, len(prompt_ids) :], skip_special_tokens=True)


# ---------------------------------------------------------------- the happy paths


def test_models_lists_base_and_adapters(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny", "alpha", "beta"]
    assert client.models.retrieve("alpha").id == "alpha"


def test_health_is_open_and_reports_the_engine(server):
    r = requests.get(server + "/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_chat_returns_a_tool_call_with_usage(client):
    reply = _chat(client, messages=[{"role": "user", "content": "what time is it?"}], tools=TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "now" and json.loads(call.function.arguments) == {}
    assert call.id.startswith("call_")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.object == "chat.completion" and reply.model == "tiny"


def test_named_tool_choice_forces_that_tool(client):
    reply = _chat(
        client,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "weather"}},
    )
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_without_tools_the_text_is_plain_content(client):
    reply = _chat(client)
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content == AUTO_SCRIPT
    assert reply.choices[0].finish_reason == "stop"
    # A conversation with an earlier tool round trip renders and answers too.
    history = [
        {"role": "user", "content": "time?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
    ]
    assert _chat(client, messages=history, tools=TOOLS).choices[0].finish_reason == "tool_calls"


def test_streaming_chat_streams_deltas_and_tool_calls(client):
    chunks = list(_chat(client, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == AUTO_SCRIPT
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2  # token by token
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []
    chunks = list(_chat(client, stream=True, tools=TOOLS, messages=[{"role": "user", "content": "time?"}]))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [tc.function.name for tc in calls] == ["now"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_completions_with_stop_and_several_prompts(client):
    reply = client.completions.create(model="tiny", prompt=["assistant\n", "assistant\n"], max_tokens=12, stop=["now"])
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.text == '<tool_call>{"name":"' and c.finish_reason == "stop" for c in reply.choices)
    assert reply.usage.prompt_tokens > 0
    streamed = client.completions.create(model="tiny", prompt="assistant\n", max_tokens=4, stream=True)
    parts = list(streamed)
    assert "".join(p.choices[0].text for p in parts) == "<tool_call"

    assert parts[-1].choices[0].finish_reason == "length"


def test_sampling_with_a_seed_is_reproducible(client):
    kw = {"model": "alpha", "temperature": 1.0, "top_p": 0.9, "seed": 7, "max_tokens": 8}
    assert _chat(client, **kw).choices[0].message.content == _chat(client, **kw).choices[0].message.content


def test_adapters_are_selected_by_model_and_batched_together(client, models):
    from moatforge.models import load_tokenizer

    tok = load_tokenizer(models["base"])
    prompt = "the quick brown fox"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    expected = {name: _expected(models, None if name == "tiny" else name, ids, 8) for name in ("tiny", "alpha", "beta")}
    assert len(set(expected.values())) == 3, "the random adapters should change the output"

    def complete(name):
        return client.completions.create(model=name, prompt=prompt, max_tokens=8, temperature=0).choices[0].text

    names = ["tiny", "alpha", "beta"] * 2
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        got = list(pool.map(complete, names))
    assert got == [expected[n] for n in names]


def test_concurrent_burst_is_batched_without_errors(client, server):
    def one(i):
        return _chat(client, messages=[{"role": "user", "content": f"request {i}"}], max_tokens=16).choices[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        choices = list(pool.map(one, range(8)))
    assert all(c.message.content == AUTO_SCRIPT for c in choices)
    stats = requests.get(server + "/health", timeout=30).json()["engine"]
    assert stats["max_batch"] > 1, stats


# ---------------------------------------------------------------- auth, bad input, overload


def test_api_key_is_required(server, client):
    anonymous = openai.OpenAI(base_url=server + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    r = _post(server, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}]}, key="")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "raw", "status", "param"),
    [
        (None, b'{"model": "tiny", "messages": [', 400, None),
        ({"model": "tiny"}, None, 400, "messages"),
        ({"model": "tiny", "messages": []}, None, 400, "messages"),
        ({"model": "tiny", "messages": "hello"}, None, 400, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, None, 400, None),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}, None, 400, None),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, None, 400, None),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, None, 400, None),
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, None, 404, "model"),
        (None, b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"a" * MAX_BODY + b'"}]}', 413, None),
    ],
    ids=[
        "malformed-json",
        "missing-messages",
        "empty-messages",
        "messages-not-a-list",
        "temperature-string",
        "max-tokens-string",
        "unknown-role",
        "max-tokens-beyond-context",
        "unknown-model",
        "oversized-body",
    ],
)
def test_bad_input_gets_an_openai_error(server, body, raw, status, param):
    r = _post(server, "/v1/chat/completions", body, raw=raw)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"]
    if param:
        assert error["param"] == param


def test_openai_client_sees_typed_errors_and_server_keeps_serving(client):
    with pytest.raises(openai.NotFoundError):
        _chat(client, model="no-such-model")
    with pytest.raises(openai.BadRequestError, match="context length"):
        _chat(client, max_tokens=10_000)
    assert _chat(client).choices[0].message.content


def test_overload_is_rejected_quickly_and_then_recovers(server, client):
    # The random adapter rarely reaches end-of-turn, so each accepted request holds its slot for a while.
    body = {"model": "alpha", "prompt": "x", "max_tokens": 200, "temperature": 0}

    def one(_):
        t0 = time.perf_counter()
        r = _post(server, "/v1/completions", body)
        return r.status_code, time.perf_counter() - t0

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(one, range(40)))
    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    rejected = [dt for s, dt in results if s == 503]
    assert rejected, "beyond max_ongoing + max_queued requests must be refused"
    assert min(rejected) < 5.0
    assert _chat(client).choices[0].finish_reason == "stop"


def test_demo_helper_deploys_queries_and_shuts_down(server, models):
    """Last in the module: the helper shuts Serve down when it is done, as the demo's final stage does."""
    from ray import serve

    from moatforge.serve.demo import serve_and_query

    serve.delete(APP)  # the demo app takes route prefix "/" too
    lines: list[str] = []
    answers = serve_and_query(str(models["base"]), ["what time is it?"], printer=lines.append, max_tokens=16)
    assert answers[0]["tool_calls"] == [{"name": "now", "arguments": "{}"}]
    assert answers[0]["finish_reason"] == "tool_calls"
    assert any("tool call now" in line for line in lines) and lines[-1].endswith("shut down")
    assert "moatforge-demo" not in serve.status().applications
