"""OpenAI request validation, message conversion, API keys and the Serve YAML mapping, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from moatforge.errors import MoatforgeError
from moatforge.serve import openai_schema as oa
from moatforge.serve.auth import KeyChecker, digest, read_key_digests, require_keys_or_open

ROOT = Path(__file__).resolve().parents[2]


def _chat(**kw):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    return oa.parse_request(json.dumps(body).encode(), oa.ChatCompletionRequest)


def _error(fn) -> oa.APIError:
    with pytest.raises(oa.APIError) as info:
        fn()
    return info.value


def test_valid_chat_request_keeps_openai_defaults_and_ignores_unknown_fields():
    req = _chat(user="u1", parallel_tool_calls=True, stop="END")
    assert req.temperature == 1.0 and req.top_p == 1.0 and req.stop == ["END"] and not req.stream


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"seed": "1"}, "seed"),
        ({"stream": "yes"}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": [{"content": "x"}]}, "messages.0.role"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"n": 2}, "n"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_bad_fields_name_the_parameter(body, param):
    err = _error(lambda: _chat(**body))
    assert err.status == 400 and err.param == param, err.message


def test_malformed_and_non_object_bodies():
    assert _error(lambda: oa.parse_request(b"{nope", oa.ChatCompletionRequest)).status == 400
    assert "JSON object" in _error(lambda: oa.parse_request(b"[1]", oa.ChatCompletionRequest)).message
    missing = _error(lambda: oa.parse_request(b'{"model": "m"}', oa.ChatCompletionRequest))
    assert missing.param == "messages" and "missing" in missing.message


def test_named_tool_choice_must_name_a_given_tool_and_forces_a_prefix():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert _error(lambda: _chat(tools=tools, tool_choice={"type": "function", "function": {"name": "x"}})).status == 400
    req = _chat(tools=tools, tool_choice={"type": "function", "function": {"name": "lookup"}})
    assert oa.tool_prefix(req) == '<tool_call>{"name": "lookup", "arguments": '
    assert oa.tool_prefix(_chat(tools=tools, tool_choice="required")) == "<tool_call>"
    assert oa.tool_prefix(_chat(tools=tools)) == ""


def test_template_messages_convert_parts_developer_and_tool_calls():
    req = _chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ]
    )
    msgs = oa.template_messages(req.messages)
    assert msgs[0] == {"role": "system", "content": "be brief"}
    assert msgs[1]["content"] == "ab"
    assert msgs[2]["tool_calls"][0]["function"] == {"name": "f", "arguments": {"x": 1}}
    assert msgs[3]["tool_call_id"] == "c"
    bad = _chat(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}])
    assert _error(lambda: oa.template_messages(bad.messages)).status == 400
    empty = _chat(messages=[{"role": "user"}])
    assert _error(lambda: oa.template_messages(empty.messages)).param == "messages.0.content"


def test_completion_request_accepts_strings_and_token_ids():
    for prompt in ("hi", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        body = json.dumps({"model": "m", "prompt": prompt}).encode()
        assert oa.parse_request(body, oa.CompletionRequest).max_tokens == 16
    assert _error(lambda: oa.parse_request(b'{"model": "m", "prompt": []}', oa.CompletionRequest)).status == 400


def test_api_keys_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MOATFORGE_API_KEYS", "k1, k2,")
    keyfile = tmp_path / "keys"
    keyfile.write_text("# team keys\nk3\n\n")
    digests = read_key_digests(str(keyfile))
    assert digests == {digest("k1"), digest("k2"), digest("k3")}
    checker = KeyChecker(digests, allow_unauthenticated=True)  # keys configured: open is not applied
    assert checker.check("Bearer k3") and checker.check("bearer k1")
    assert not checker.check(None) and not checker.check("Bearer nope") and not checker.check("Basic k1")
    with pytest.raises(MoatforgeError, match="cannot read"):
        read_key_digests(str(tmp_path / "missing"))


def test_no_keys_needs_an_explicit_open_setting(monkeypatch):
    monkeypatch.delenv("MOATFORGE_API_KEYS", raising=False)
    with pytest.raises(MoatforgeError, match="allow_unauthenticated"):
        require_keys_or_open(read_key_digests(None), allow_unauthenticated=False)
    require_keys_or_open(set(), allow_unauthenticated=True)
    assert KeyChecker(set(), allow_unauthenticated=True).check(None)


def test_student_yaml_is_a_valid_serve_config_and_maps_onto_serve_args():
    from ray.serve.schema import ServeDeploySchema

    from moatforge.serve.run import load_serve_config

    path = ROOT / "serve" / "student.yaml"
    ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    cfg = load_serve_config(str(path), ["serve.port=8123", "serve.adapters.billing=/tmp/adapter"])
    s = cfg.serve
    assert s.port == 8123 and s.model_name == "student" and s.adapters == {"billing": "/tmp/adapter"}
    assert s.engine.max_replicas == 4 and s.engine.max_queued_requests == 64
    assert s.ingress.num_cpus == 0.5


def test_serve_yaml_with_unknown_deployment_options_is_refused(tmp_path):
    from moatforge.serve.run import load_serve_config

    data = {"applications": [{"args": {}, "deployments": [{"name": "LLMServer", "graceful_shutdown_timeout_s": 1}]}]}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MoatforgeError, match="graceful_shutdown_timeout_s"):
        load_serve_config(str(path), [])
    with pytest.raises(MoatforgeError, match="unknown key"):
        load_serve_config(None, ["serve.prot=1"])
