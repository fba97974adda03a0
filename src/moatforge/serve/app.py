"""The Ray Serve application: an OpenAI-compatible HTTP front over a continuously batching model deployment.

Two deployments, because they scale differently and because Serve's model multiplexing routes by a handle option:

* ``OpenAIIngress`` (FastAPI) checks the API key, reads a size-limited body, validates it, renders the chat
  template and tokenizes; cheap work that fails fast with a 4xx before a model replica is involved.
* ``LLMServer`` holds the model and a ``BatchEngine``. The ingress calls it through a streaming handle with
  ``multiplexed_model_id`` set to the requested LoRA adapter, so Serve prefers replicas that already hold that
  adapter, and ``@serve.multiplexed`` loads/evicts adapters per replica (LRU).

Overload is bounded at both hops by ``max_ongoing_requests`` and ``max_queued_requests``: beyond them Serve rejects
at once (the proxy answers 503, the handle raises ``BackPressureError`` which the ingress answers as 503 in
OpenAI's error shape) instead of letting latency grow without bound.
"""

# No `from __future__ import annotations`: FastAPI must see real types (Request) on the route methods.

import asyncio
import functools
import logging
import os
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from moatforge.chat_template import parse_assistant_output
from moatforge.config import ServeArgs
from moatforge.errors import MoatforgeError
from moatforge.serve import openai_schema as oa
from moatforge.serve.auth import KeyChecker, read_key_digests, require_keys_or_open
from moatforge.serve.openai_schema import APIError

logger = logging.getLogger("moatforge.serve")

INGRESS_NAME = "OpenAIIngress"
ENGINE_NAME = "LLMServer"
TOOL_OPEN = "<tool_call>"


# ====================================================================== the model deployment


class _LLMServerBase:
    """Loads the model once per replica and feeds every request into one shared ``BatchEngine``."""

    def __init__(self, args: dict):
        from moatforge.models import load_tokenizer, resolve_model, row_major_output_head
        from moatforge.serve.generation import BatchEngine

        cfg = ServeArgs.model_validate(args)
        self.cfg = cfg
        import torch

        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = _torch_dtype(cfg.dtype, device)
        model_dir = resolve_model(cfg.model)
        self.tokenizer = load_tokenizer(model_dir, cfg.chat_template)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
        self.adapter_paths = {name: _check_adapter(name, path) for name, path in cfg.adapters.items()}
        if self.adapter_paths:
            from peft import PeftModel

            # peft's mixed-adapter batches need a PeftModel from the start; further adapters load on demand.
            first, path = next(iter(self.adapter_paths.items()))
            model = PeftModel.from_pretrained(model, path, adapter_name=first).eval()
        else:  # an adapter may target the output layer, and peft wraps only its own layer types
            row_major_output_head(model)
        self.stop_token_ids = _stop_token_ids(self.tokenizer, model)
        self.engine = BatchEngine(
            model,
            self.tokenizer,
            max_batch_size=cfg.max_batch_size,
            max_waiting=max(cfg.engine.max_ongoing_requests, cfg.max_batch_size),
            max_context=cfg.max_context,
            prefix_cache_tokens=cfg.prefix_cache_tokens,
        )
        self.recorder = _replica_recorder(cfg, ENGINE_NAME, cfg.engine)
        self.engine.on_batch = self.recorder.batch
        logger.info("LLMServer ready: %s on %s (%s), adapters %s", model_dir, device, dtype, list(self.adapter_paths))

    async def _load_adapter(self, name: str):
        path = self.adapter_paths.get(name)
        if path is None:
            raise ValueError(f"unknown adapter {name!r}")

        def load():
            model = self.engine.model
            if name not in model.peft_config:
                model.load_adapter(path, adapter_name=name)
                model.eval()

        await asyncio.wrap_future(self.engine.run_in_loop(load))
        return _AdapterLease(self.engine, name)

    async def generate(self, payload: dict):
        from moatforge.serve.generation import GenerationRequest, SamplingParams

        adapter = serve.get_multiplexed_model_id() or None
        if adapter:
            self.engine.acquire_adapter(adapter)
        try:
            if adapter:
                await self.get_adapter(adapter)
            request = GenerationRequest(
                prompt_ids=payload["prompt_ids"],
                params=SamplingParams(
                    max_tokens=payload["max_tokens"],
                    temperature=payload["temperature"],
                    top_p=payload["top_p"],
                    seed=payload.get("seed"),
                    stop=payload.get("stop") or [],
                    stop_token_ids=self.stop_token_ids,
                ),
                adapter=adapter,
                stream=payload.get("stream", False),
            )
            async for event in self.engine.generate(request):
                if event["type"] == "done":
                    self.recorder.finished(event["prompt_tokens"], event["completion_tokens"], event.get("ttft_s"))
                yield event
        finally:
            if adapter:
                self.engine.release_adapter(adapter)

    async def stats(self) -> dict:
        return self.engine.load_stats()

    def check_health(self) -> None:
        if not self.engine.healthy():
            raise RuntimeError("the generation loop is not running")

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
        recorder = getattr(self, "recorder", None)
        if recorder is not None:
            recorder.close()


class _AdapterLease:
    """What ``@serve.multiplexed`` caches per adapter; its eviction unloads the adapter once no request uses it."""

    def __init__(self, engine, name: str):
        self.engine = engine
        self.name = name
        self._released = False

    def __del__(self):
        if not self._released:
            self._released = True
            self.engine.drop_adapter_when_idle(self.name)


def _engine_deployment(max_adapters: int):
    """The multiplexing limit is fixed at decoration time, so the class is made per configuration."""

    class LLMServer(_LLMServerBase):
        @serve.multiplexed(max_num_models_per_replica=max_adapters)
        async def get_adapter(self, name: str):
            return await self._load_adapter(name)

    return serve.deployment(name=ENGINE_NAME)(LLMServer)


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def _check_adapter(name: str, path: str) -> str:
    p = Path(os.path.expanduser(path))
    if not (p / "adapter_config.json").is_file():
        raise MoatforgeError(f"serve.adapters.{name}: {path} is not a peft adapter directory (no adapter_config.json)")
    return str(p.resolve())


def _stop_token_ids(tokenizer, model) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in eos if isinstance(eos, list) else [eos]:
        if value is not None:
            ids.add(int(value))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(ids)


# ====================================================================== the HTTP front

# Helpers sit above the ingress class: Serve serializes the class when it is decorated, so names defined
# further down would be missing from its globals inside the replica.


async def _chain(first: dict, stream):
    yield first
    if first["type"] == "done":
        return
    async for event in stream:
        yield event
        if event["type"] == "done":
            return


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker`` (it may still become one)."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def _map_engine_error(exc: BaseException) -> APIError:
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    from moatforge.serve.generation import EngineOverloaded

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, BackPressureError | EngineOverloaded):
        return APIError(503, "the server is overloaded; retry shortly", type_="server_error", code="overloaded")
    if isinstance(exc, DeploymentUnavailableError):
        return APIError(503, "the model is not available right now; retry shortly", type_="server_error")
    if isinstance(exc, ValueError):
        return APIError(400, str(exc).splitlines()[-1][:300])
    logger.error("generation failed: %s", exc)
    return APIError(500, f"generation failed: {type(exc).__name__}", type_="server_error")


def _replica_recorder(cfg: ServeArgs, deployment: str, d):
    """This replica's metrics (moatforge.metrics.SERVE_METRICS), billed for its CPUs and accelerators."""
    from moatforge.metrics import ServeRecorder, detect_accelerator, prices_with_defaults, serve_cost_per_hour

    accelerator = cfg.accelerator or (detect_accelerator(True) if d.num_gpus else "cpu_core")
    per_hour = serve_cost_per_hour(d.num_cpus, d.num_gpus, accelerator, prices_with_defaults(cfg.prices))
    return ServeRecorder(deployment, cfg.model_name or cfg.model, per_hour)


def _recorded(route):
    """Count a route's responses by status code and time each to its last byte (a stream's included)."""

    @functools.wraps(route)
    async def wrapper(self, request: Request):
        t0 = time.perf_counter()
        try:
            response = await route(self, request)
        except Exception:
            self.recorder.request(500, time.perf_counter() - t0)
            raise
        code = getattr(response, "status_code", 200)
        if not isinstance(response, StreamingResponse):
            self.recorder.request(code, time.perf_counter() - t0)
            return response
        body = response.body_iterator

        async def timed():
            try:
                async for chunk in body:
                    yield chunk
            finally:
                self.recorder.request(code, time.perf_counter() - t0)

        response.body_iterator = timed()
        return response

    return wrapper


api = FastAPI(title="moatforge OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, exc: StarletteHTTPException):
    err = APIError(exc.status_code, str(exc.detail), param=None, code=None)
    return JSONResponse(err.body(), status_code=exc.status_code)


@api.exception_handler(Exception)
async def _unexpected(_request: Request, exc: Exception):
    logger.exception("unhandled error")
    err = APIError(500, f"internal error: {type(exc).__name__}", type_="server_error")
    return JSONResponse(err.body(), status_code=500)


def _error_response(err: APIError) -> JSONResponse:
    headers = {"Retry-After": "1"} if err.status in (429, 503) else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


@serve.deployment(name=INGRESS_NAME)
@serve.ingress(api)
class OpenAIIngress:
    def __init__(self, engine, args: dict, key_digests: list[str]):
        from transformers import AutoConfig

        from moatforge.models import load_tokenizer, resolve_model
        from moatforge.serve.generation import context_length

        cfg = ServeArgs.model_validate(args)
        self.cfg = cfg
        self.engine = engine
        digests = set(key_digests) | read_key_digests(cfg.api_keys_file)
        require_keys_or_open(digests, cfg.allow_unauthenticated)
        self.keys = KeyChecker(digests, cfg.allow_unauthenticated)
        model_dir = resolve_model(cfg.model)
        self.tokenizer = load_tokenizer(model_dir, cfg.chat_template)
        self.vocab_size = len(self.tokenizer)
        self.max_context = cfg.max_context or context_length(AutoConfig.from_pretrained(str(model_dir)))
        self.served_name = cfg.model_name or cfg.model
        self.base_names = {self.served_name, cfg.model}
        self.created = int(time.time())
        self.recorder = _replica_recorder(cfg, INGRESS_NAME, cfg.ingress)

    # ------------------------------------------------------------------ routes

    @api.get("/health")
    async def health(self):
        try:
            stats = await asyncio.wait_for(self.engine.stats.remote(), timeout=10)
        except Exception as exc:
            return _error_response(APIError(503, f"model replica not ready: {type(exc).__name__}", "server_error"))
        return {"status": "ok", "model": self.served_name, "engine": stats}

    @api.get("/v1/models")
    async def models(self, request: Request):
        if err := self._auth(request):
            return err
        cards = [oa.model_card(self.served_name, "moatforge", self.created)]
        cards += [oa.model_card(n, "moatforge", self.created, parent=self.served_name) for n in self.cfg.adapters]
        return {"object": "list", "data": cards}

    @api.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str, request: Request):
        if err := self._auth(request):
            return err
        try:
            adapter = self._resolve_model(model_id)
        except APIError as exc:
            return _error_response(exc)
        parent = self.served_name if adapter else None
        return oa.model_card(adapter or self.served_name, "moatforge", self.created, parent=parent)

    @api.post("/v1/chat/completions")
    @_recorded
    async def chat_completions(self, request: Request):
        try:
            if err := self._auth(request):
                return err
            req = oa.parse_request(await self._read_body(request), oa.ChatCompletionRequest)
            return await self._chat(req)
        except APIError as exc:
            return _error_response(exc)

    @api.post("/v1/completions")
    @_recorded
    async def completions(self, request: Request):
        try:
            if err := self._auth(request):
                return err
            req = oa.parse_request(await self._read_body(request), oa.CompletionRequest)
            return await self._complete(req)
        except APIError as exc:
            return _error_response(exc)

    # ------------------------------------------------------------------ request plumbing

    def _auth(self, request: Request) -> JSONResponse | None:
        if self.keys.check(request.headers.get("authorization")):
            return None
        err = APIError(
            401,
            "invalid or missing API key: send 'Authorization: Bearer <key>'",
            param=None,
            code="invalid_api_key",
        )
        return JSONResponse(err.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})

    async def _read_body(self, request: Request) -> bytes:
        limit = self.cfg.max_body_bytes
        too_big = APIError(413, f"request body exceeds {limit} bytes", code="request_too_large")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    def _resolve_model(self, name: str) -> str | None:
        """None for the base model, the adapter name for a LoRA adapter; 404 for anything else."""
        if name in self.base_names:
            return None
        if name in self.cfg.adapters:
            return name
        raise APIError(404, f"the model {name!r} does not exist", param="model", code="model_not_found")

    def _tokens(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _budget(self, requested: int | None, prompt_tokens: int) -> int:
        room = self.max_context - prompt_tokens
        if requested is None:
            if room < 1:
                raise self._context_error(prompt_tokens, 1)
            return min(self.cfg.default_max_tokens, room)
        if requested > room:
            raise self._context_error(prompt_tokens, requested)
        return requested

    def _context_error(self, prompt_tokens: int, requested: int) -> APIError:
        return APIError(
            400,
            f"this model's maximum context length is {self.max_context} tokens; the request needs "
            f"{prompt_tokens + requested} ({prompt_tokens} in the prompt, {requested} for the completion)",
            param="max_tokens",
            code="context_length_exceeded",
        )

    def _payload(self, req, prompt_ids: list[int], max_tokens: int, stream: bool) -> dict:
        return {
            "prompt_ids": prompt_ids,
            "max_tokens": max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "stop": req.stop,
            "stream": stream,
        }

    def _start(self, payload: dict, adapter: str | None):
        options = {"stream": True}
        if adapter:
            options["multiplexed_model_id"] = adapter
        return self.engine.options(**options).generate.remote(payload)

    async def _first(self, stream):
        """Wait for the first event so that overload and engine errors become a status code, not a broken stream."""
        try:
            return await stream.__anext__()
        except Exception as exc:
            raise _map_engine_error(exc) from None

    # ------------------------------------------------------------------ chat

    async def _chat(self, req: oa.ChatCompletionRequest):
        from moatforge.data import render

        adapter = self._resolve_model(req.model)
        messages = oa.template_messages(req.messages)
        use_tools = bool(req.tools) and req.tool_choice != "none"
        tools = [t.model_dump(exclude_none=True) for t in req.tools] if use_tools else None
        try:
            prompt = render(self.tokenizer, messages, tools, add_generation_prompt=True)
        except Exception as exc:  # jinja raises TemplateError and others for conversations it refuses
            raise APIError(400, f"the chat template cannot render these messages: {exc}", param="messages") from None
        prefix = oa.tool_prefix(req) if use_tools else ""
        prompt_ids = self._tokens(prompt + prefix)
        max_tokens = self._budget(req.requested_max_tokens(), len(prompt_ids))
        stream = self._start(self._payload(req, prompt_ids, max_tokens, req.stream), adapter)
        first = await self._first(stream)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = _chain(first, stream)
            body = self._chat_sse(events, req.model, use_tools, prefix, include_usage)
            return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        done = first
        text = prefix + done["text"]
        message: dict = {"role": "assistant", "content": text}
        finish = done["finish_reason"]
        if use_tools:
            parsed = parse_assistant_output(text)
            if parsed.tool_calls and not parsed.error:
                message = {
                    "role": "assistant",
                    "content": parsed.content or None,
                    "tool_calls": oa.openai_tool_calls(parsed.tool_calls),
                }
                finish = "tool_calls"
        return {
            "id": oa.new_id("chatcmpl"),
            "object": "chat.completion",
            "created": oa.now(),
            "model": req.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": oa.usage(done["prompt_tokens"], done["completion_tokens"]),
        }

    async def _chat_sse(self, events, model: str, use_tools: bool, prefix: str, include_usage: bool):
        cid, created = oa.new_id("chatcmpl"), oa.now()

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return oa.sse(
                {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]}
            )

        yield chunk({"role": "assistant", "content": ""})
        held = prefix  # text not yet sent: a possible <tool_call> start, or a call being generated
        in_call = False
        try:
            async for event in events:
                if event["type"] == "delta":
                    if not use_tools:
                        yield chunk({"content": event["text"]})
                        continue
                    held += event["text"]
                    if in_call:
                        continue
                    idx = held.find(TOOL_OPEN)
                    cut = idx if idx >= 0 else len(held) - _partial_suffix(held, TOOL_OPEN)
                    in_call = idx >= 0
                    if cut > 0:
                        yield chunk({"content": held[:cut]})
                        held = held[cut:]
                    continue
                finish = event["finish_reason"]
                if use_tools:
                    parsed = parse_assistant_output(prefix + event["text"])
                    if parsed.tool_calls and not parsed.error:
                        for i, call in enumerate(oa.openai_tool_calls(parsed.tool_calls)):
                            yield chunk({"tool_calls": [{"index": i, **call}]})
                        finish = "tool_calls"
                    elif held:
                        yield chunk({"content": held})
                yield chunk({}, finish)
                if include_usage:
                    usage = oa.usage(event["prompt_tokens"], event["completion_tokens"])
                    yield oa.sse(
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
        except Exception as exc:
            yield oa.sse(_map_engine_error(exc).body())
        yield oa.sse("[DONE]")

    # ------------------------------------------------------------------ completions

    async def _complete(self, req: oa.CompletionRequest):
        adapter = self._resolve_model(req.model)
        prompts = self._completion_prompts(req.prompt)
        starts = []
        for text, ids in prompts:
            max_tokens = self._budget(req.max_tokens, len(ids))
            starts.append((text, self._start(self._payload(req, ids, max_tokens, req.stream), adapter)))
        firsts = await asyncio.gather(*(self._first(s) for _, s in starts), return_exceptions=True)
        for first in firsts:
            if isinstance(first, BaseException):
                for _, s in starts:
                    s.cancel()
                raise first if isinstance(first, APIError) else _map_engine_error(first)
        cid, created = oa.new_id("cmpl"), oa.now()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            streams = [_chain(f, s) for f, (_, s) in zip(firsts, starts, strict=True)]
            echoes = [text if req.echo else "" for text, _ in prompts]
            body = self._completion_sse(streams, echoes, cid, created, req.model, include_usage)
            return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for i, (done, (text, _)) in enumerate(zip(firsts, prompts, strict=True)):
            choices.append(
                {
                    "index": i,
                    "text": (text if req.echo else "") + done["text"],
                    "logprobs": None,
                    "finish_reason": done["finish_reason"],
                }
            )
            prompt_tokens += done["prompt_tokens"]
            completion_tokens += done["completion_tokens"]
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": req.model,
            "choices": choices,
            "usage": oa.usage(prompt_tokens, completion_tokens),
        }

    def _completion_prompts(self, prompt) -> list[tuple[str, list[int]]]:
        if isinstance(prompt, str):
            prompt = [prompt]
        if prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        out = []
        for i, item in enumerate(prompt):
            if isinstance(item, str):
                ids = self._tokens(item)
                text = item
            else:
                if any(t < 0 or t >= self.vocab_size for t in item):
                    raise APIError(400, f"prompt[{i}] has token ids outside the vocabulary", param="prompt")
                ids, text = list(item), self.tokenizer.decode(item)
            if not ids:
                raise APIError(400, f"prompt[{i}] is empty", param="prompt")
            out.append((text, ids))
        return out

    async def _completion_sse(self, streams, echoes, cid, created, model, include_usage):
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, events):
            try:
                async for event in events:
                    await queue.put((index, event))
            except Exception as exc:
                await queue.put((index, exc))
            await queue.put((index, None))

        def chunk(index: int, text: str, finish: str | None = None, **extra) -> bytes:
            choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
            obj = {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": [choice]}
            return oa.sse({**obj, **extra})

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        for i, echo in enumerate(echoes):
            if echo:
                yield chunk(i, echo)
        open_streams, prompt_tokens, completion_tokens = len(tasks), 0, 0
        try:
            while open_streams:
                index, event = await queue.get()
                if event is None:
                    open_streams -= 1
                elif isinstance(event, Exception):
                    yield oa.sse(_map_engine_error(event).body())
                elif event["type"] == "delta":
                    yield chunk(index, event["text"])
                else:
                    prompt_tokens += event["prompt_tokens"]
                    completion_tokens += event["completion_tokens"]
                    yield chunk(index, "", event["finish_reason"])
            if include_usage:
                usage = oa.usage(prompt_tokens, completion_tokens)
                obj = {"id": cid, "object": "text_completion", "created": created, "model": model}
                yield oa.sse({**obj, "choices": [], "usage": usage})
            yield oa.sse("[DONE]")
        finally:
            for task in tasks:
                task.cancel()


# ====================================================================== building the application


def build_app(args: dict | None = None):
    """``serve run moatforge.serve:build_app`` entry point: args are a ``serve:`` config group (see ServeArgs)."""
    try:
        cfg = ServeArgs.model_validate(args or {})
    except Exception as exc:
        raise MoatforgeError(f"invalid serve arguments: {exc}") from None
    digests = read_key_digests(cfg.api_keys_file)
    require_keys_or_open(digests, cfg.allow_unauthenticated)
    plain = cfg.model_dump(mode="json")
    engine = _engine_deployment(cfg.max_adapters_per_replica).options(**_deployment_options(cfg.engine))
    ingress = OpenAIIngress.options(**_deployment_options(cfg.ingress))
    return ingress.bind(engine.bind(plain), plain, sorted(digests))


def _deployment_options(d) -> dict:
    actor = {"num_cpus": d.num_cpus}
    if d.num_gpus:
        actor["num_gpus"] = d.num_gpus
    autoscaling = {
        "min_replicas": d.min_replicas,
        "max_replicas": d.max_replicas,
        "target_ongoing_requests": d.target_ongoing_requests,
    }
    # Always autoscaling (min == max pins the count) so a Serve YAML's autoscaling_config can override it.
    return {
        "max_ongoing_requests": d.max_ongoing_requests,
        "max_queued_requests": d.max_queued_requests,
        "ray_actor_options": actor,
        "autoscaling_config": autoscaling,
    }
