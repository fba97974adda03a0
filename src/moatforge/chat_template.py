"""A tool-aware ChatML template (Hermes-style ``<tool_call>`` JSON) and the parser for what it teaches.

Many small models (SmolLM2 among them) ship a chat template that knows nothing of tools and breaks on an
assistant message whose content is None. Training and serving must agree byte for byte on how tools and
calls look, so the template and the parser live together here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# Tools are listed as compact signatures (name(arg: type, opt?: "a"|"b") - description) rather than raw JSON
# Schema: a small model reads them as well, and they cost a third of the prompt tokens on a CPU.
# Newlines that follow a block tag are written as {{ '\\n' }}: transformers renders with trim_blocks=True.
HERMES_TOOL_TEMPLATE = (
    "{% set msgs = messages %}"
    "{% set system = '' %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set msgs = messages[1:] %}"
    "{% endif %}"
    "{% if tools %}"
    "<|im_start|>system\n{{ system if system else 'You are a helpful assistant.' }}\n\n"
    "Tools you can call:"
    "{% for tool in tools %}"
    "{% set f = tool['function'] if tool['function'] is defined else tool %}"
    "{% set params = f['parameters'] if f['parameters'] is defined and f['parameters'] else {} %}"
    "{% set props = params['properties'] if params['properties'] is defined else {} %}"
    "{% set required = params['required'] if params['required'] is defined else [] %}"
    "{{ '\\n' }}{{ f['name'] }}("
    "{% for pname, p in props.items() %}{{ pname }}{{ '' if pname in required else '?' }}: "
    "{% if p['enum'] is defined %}{{ p['enum'] | map('tojson') | join('|') }}"
    "{% elif p['type'] in ['object', 'array'] %}{{ p | tojson }}"
    "{% else %}{{ p['type'] }}{% endif %}"
    "{{ ', ' if not loop.last else '' }}{% endfor %})"
    "{% if f['description'] is defined and f['description'] %} - {{ f['description'] }}{% endif %}"
    "{% endfor %}{{ '\\n' }}"
    'To call tools, reply with one <tool_call>{"name": ..., "arguments": {...}}</tool_call> per call.'
    "<|im_end|>\n"
    "{% elif system %}"
    "<|im_start|>system\n{{ system }}<|im_end|>\n"
    "{% endif %}"
    "{% for m in msgs %}"
    "{% if m['role'] == 'assistant' %}"
    "<|im_start|>assistant\n{{ m['content'] if m['content'] else '' }}"
    "{% if m['tool_calls'] is defined and m['tool_calls'] %}"
    "{% for tc in m['tool_calls'] %}"
    "{% set f = tc['function'] if tc['function'] is defined else tc %}"
    "{% if m['content'] or not loop.first %}{{ '\\n' }}{% endif %}"
    '<tool_call>{"name": {{ f[\'name\'] | tojson }}, "arguments": '
    "{{ f['arguments'] if f['arguments'] is string else f['arguments'] | tojson }}}</tool_call>"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% else %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] if m['content'] else '' }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass
class ParsedOutput:
    content: str
    tool_calls: list[dict] = field(default_factory=list)
    error: str | None = None


def template_supports_tools(template: str | None) -> bool:
    return bool(template) and "tools" in template


def parse_assistant_output(text: str) -> ParsedOutput:
    """Split generated text into plain content and tool calls; a malformed call sets ``error``."""
    calls: list[dict] = []
    error = None
    for match in _CALL_RE.finditer(text):
        body = match.group(1).strip()
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as exc:
            error = f"tool call is not valid JSON: {exc.msg}"
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            error = "tool call lacks a string 'name'"
            continue
        args = obj.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                error = "tool call arguments are not valid JSON"
                continue
        if not isinstance(args, dict):
            error = "tool call arguments are not a JSON object"
            continue
        calls.append({"name": obj["name"], "arguments": args})
    content = _CALL_RE.sub("", text).strip()
    return ParsedOutput(content=content, tool_calls=calls, error=error)
