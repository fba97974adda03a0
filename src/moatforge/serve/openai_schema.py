"""The OpenAI wire format: request validation, error bodies and response objects.

Requests are validated strictly (a string where a number belongs is a 400, as on api.openai.com, not silently
coerced) but unknown fields are ignored, because real clients send fields a small server cannot act on (``user``,
``metadata``, ``parallel_tool_calls``) and refusing them would break drop-in use. Fields that would change the
answer and are not implemented (``n`` > 1, ``logprobs``, penalties) are refused with a clear 400 instead.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class APIError(Exception):
    """An OpenAI-style error: the HTTP status and the ``{"error": {...}}`` body the client libraries parse."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class FunctionDef(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDef


class ToolCallFunction(_Strict):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class NamedToolChoiceFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: NamedToolChoiceFunction


class StreamOptions(_Strict):
    include_usage: bool = False


class _SamplingFields(_Strict):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    def check_supported(self) -> None:
        if self.n != 1:
            raise APIError(400, "only n=1 is supported", param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(400, f"{name} is not supported by this server; omit it or send 0", param=name)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs:
            raise APIError(400, "logprobs are not supported by this server", param="logprobs")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise APIError(400, "only response_format {'type': 'text'} is supported", param="response_format")
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise APIError(400, "tool_choice needs tools", param="tool_choice")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise APIError(
                    400, f"tool_choice names {self.tool_choice.function.name!r}, which is not in tools", "tool_choice"
                )

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.suffix:
            raise APIError(400, "suffix is not supported by this server", param="suffix")
        if self.logprobs is not None:
            raise APIError(400, "logprobs are not supported by this server", param="logprobs")
        if self.best_of not in (None, 1):
            raise APIError(400, "only best_of=1 is supported", param="best_of")
        if isinstance(self.prompt, list) and not self.prompt:
            raise APIError(400, "prompt must not be an empty list", param="prompt")


def parse_request(raw: bytes, model: type[_Strict]):
    """Bytes → validated request, or an APIError naming the first bad field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        if err["type"] == "missing":
            raise APIError(400, f"missing required parameter: {param!r}", param=param) from None
        got = err.get("input")
        shown = json.dumps(got)[:80] if not isinstance(got, dict | list) else type(got).__name__
        raise APIError(400, f"invalid value for {param!r}: {err['msg']} (got {shown})", param=param) from None
    request.check_supported()
    return request


def _is_union_tag(part) -> bool:
    """Pydantic's locations name union members (``str``, ``list[...]``); the client only wants field names."""
    text = str(part)
    return text in {"str", "int", "float", "bool", "none", "NamedToolChoice", "ContentPart"} or text.startswith(
        ("list[", "dict[", "function-", "literal[", "json-or-python")
    )


# ---------------------------------------------------------------- messages → template input


def template_messages(messages: list[ChatMessage]) -> list[dict]:
    """OpenAI messages as the chat template expects them (``developer`` is a system turn, parts are joined)."""
    out = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        role = "system" if m.role == "developer" else m.role
        entry: dict = {"role": role, "content": content}
        if m.role == "assistant" and m.tool_calls:
            entry["tool_calls"] = [_template_call(tc, i) for tc in m.tool_calls]
        elif content is None:
            raise APIError(400, f"messages[{i}] ({m.role}) has no content", param=f"messages.{i}.content")
        if m.role == "tool" and m.tool_call_id:
            entry["tool_call_id"] = m.tool_call_id
        out.append(entry)
    return out


def _template_call(tc: ToolCall, i: int) -> dict:
    args = tc.function.arguments
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            raise APIError(
                400, f"messages[{i}] has tool call arguments that are not valid JSON", param=f"messages.{i}.tool_calls"
            ) from None
    return {"type": "function", "function": {"name": tc.function.name, "arguments": args}}


def tool_prefix(request: ChatCompletionRequest) -> str:
    """Text the assistant turn is forced to start with so that ``tool_choice`` required/named is honoured."""
    choice = request.tool_choice
    if choice == "required":
        return "<tool_call>"
    if isinstance(choice, NamedToolChoice):
        return '<tool_call>{"name": ' + json.dumps(choice.function.name) + ', "arguments": '
    return ""


# ---------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def openai_tool_calls(calls: list[dict]) -> list[dict]:
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)},
        }
        for c in calls
    ]


def model_card(model_id: str, owned_by: str, created: int, parent: str | None = None) -> dict:
    card = {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
    if parent:
        card["parent"] = parent
    return card


def sse(obj: dict | str) -> bytes:
    payload = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()
