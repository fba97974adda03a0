"""Continuous batching with a KV cache: one model, many concurrent requests, tokens streamed as they are made.

A replica that answers one request at a time leaves most of the hardware idle: a decode step for one sequence
costs nearly as much as one for thirty. So a single loop thread owns the model and, between decode steps, admits
waiting requests (prefilled together, then copied into free rows of the running batch's cache) and retires
finished ones. Nobody waits for a whole batch to end, which is what keeps tail latency close to single-request
latency under load.

The running batch's keys and values live in preallocated per-layer buffers (``_BatchState``), left-padded so
that every row's next token goes to the same column: a decode step writes that column in place, a finished row
just leaves its slot for the next request, and only a batch that has become mostly empty is copied. With
transformers' ``DynamicCache`` each step concatenates (copies) the whole cache, which on a CPU cost as much as
the model's matrix work at batch 32.

Each row samples with its own temperature, top-p and ``torch.Generator`` (the request's seed), so mixing requests
in a batch never changes what a greedy or seeded request returns. LoRA adapters of different requests share a
batch through peft's ``adapter_names`` (rows without an adapter use ``__base__``).

Prompts that start like an earlier one reuse its keys and values (automatic prefix caching, as vLLM's): an
application sends the same system prompt and tool list with every request, and on a CPU that shared part is
most of the prefill. The cache is an LRU of recent prompts' per-layer KV, bounded in tokens; a new prompt takes
the longest common prefix with any entry (same adapter only: LoRA changes keys and values) and prefills just
the rest. Written here rather than borrowed because it has to share the running batch's cache layout: a row's
past sits left-padded before its suffix, so rows with different prefix lengths prefill together (the
attention mask and explicit positions make the padding hole between them invisible).

The loop runs in a thread because torch releases the GIL: the asyncio event loop of the Serve replica keeps
accepting requests and streaming tokens while a step computes. Results travel back through
``loop.call_soon_threadsafe`` into one asyncio queue per request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

logger = logging.getLogger("moatforge.serve")

BASE_ADAPTER = "__base__"


class EngineOverloaded(Exception):
    """More requests are waiting than the engine is configured to hold; the caller should answer 503."""


class EngineClosed(Exception):
    """The engine shut down, or its loop died, while a request was waiting or running."""


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None
    # Streaming sends a delta per step; otherwise only the final event travels, which keeps the hop cheap.
    stream: bool = False


@dataclass
class _Sequence:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    generator: object | None
    arrived: float
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    generated: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    first_token_s: float | None = None  # arrival to first generated token (metrics)

    def send(self, event: dict) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the request's event loop is gone: nobody is listening any more
            self.cancelled = True


class BatchEngine:
    """Owns a causal LM (optionally a peft model with several adapters) and runs the continuous-batching loop."""

    def __init__(
        self,
        model,
        tokenizer,
        max_batch_size: int = 16,
        max_waiting: int = 256,
        max_context: int | None = None,
        prefill_token_budget: int = 4096,
        prefix_cache_tokens: int = 8192,
        min_prefix_tokens: int = 16,
    ):
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        self.max_context = max_context or context_length(model.config)
        self.prefill_token_budget = prefill_token_budget
        self.prefix_cache = PrefixCache(prefix_cache_tokens, min_prefix_tokens)
        self.device = next(model.parameters()).device
        self.uses_adapters = hasattr(model, "peft_config")
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._batch: _BatchState | None = None
        self._adapter_users: dict[str, int] = {}
        self._adapters_to_drop: set[str] = set()
        self._commands: deque = deque()
        self.stats = {
            "steps": 0,
            "max_batch": 0,
            "prefills": 0,
            "generated_tokens": 0,
            "prompt_tokens": 0,
            "prefix_cached_tokens": 0,  # prompt tokens whose keys and values came from the prefix cache
            "reused_slots": 0,  # rows that joined the batch in a finished row's place
            "compactions": 0,  # times the batch was copied to close gaps left by finished rows
        }
        self.on_batch = None  # called with the running batch's size at every decode step (metrics)
        self._thread = threading.Thread(target=self._run, name="moatforge-batch-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API (asyncio side)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[dict]:
        """Yield ``{"type": "delta", "text"}`` events (when streaming) and one final ``{"type": "done"}``."""
        if len(request.prompt_ids) + request.params.max_tokens > self.max_context:
            raise ValueError(
                f"prompt ({len(request.prompt_ids)} tokens) + max_tokens ({request.params.max_tokens}) "
                f"exceeds the model's context of {self.max_context} tokens"
            )
        loop = asyncio.get_running_loop()
        seq = _Sequence(
            request=request,
            loop=loop,
            queue=asyncio.Queue(),
            generator=self._make_generator(request.params.seed),
            arrived=time.perf_counter(),
        )
        with self._cond:
            if self._closed or self._error is not None:
                raise EngineClosed(f"the generation engine is not running ({self._error or 'closed'})")
            if len(self._waiting) >= self.max_waiting:
                raise EngineOverloaded(f"{len(self._waiting)} requests already waiting for a batch slot")
            self._waiting.append(seq)
            self._cond.notify()
        try:
            while True:
                event = await seq.queue.get()
                if event["type"] == "error":
                    raise EngineClosed(event["message"])
                yield event
                if event["type"] == "done":
                    return
        finally:
            # The client went away (or we finished): the loop drops the row at its next step.
            seq.cancelled = True

    def run_in_loop(self, fn) -> concurrent.futures.Future:
        """Run ``fn()`` on the loop thread between two steps: the only safe moment to change the model."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed or self._error is not None:
                future.set_exception(EngineClosed("the generation engine is not running"))
                return future
            self._commands.append((fn, future))
            self._cond.notify()
        return future

    def acquire_adapter(self, name: str) -> None:
        """Count a request that will use ``name`` from before its adapter is loaded until it ends."""
        with self._cond:
            self._adapter_users[name] = self._adapter_users.get(name, 0) + 1
            self._adapters_to_drop.discard(name)

    def release_adapter(self, name: str) -> None:
        with self._cond:
            self._adapter_users[name] = max(0, self._adapter_users.get(name, 0) - 1)
            self._cond.notify()

    def drop_adapter_when_idle(self, name: str) -> None:
        """Unload a LoRA adapter once no request uses it (multiplexing evicts while requests may still run)."""
        with self._cond:
            self._adapters_to_drop.add(name)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def healthy(self) -> bool:
        return self._error is None and not self._closed and self._thread.is_alive()

    def load_stats(self) -> dict:
        with self._cond:
            return {"waiting": len(self._waiting), "running": self._live_rows(), **self.stats}

    # ------------------------------------------------------------------ the loop (thread side)

    def _make_generator(self, seed: int | None):
        if seed is None:
            return None
        gen = self.torch.Generator(device=self.device)
        gen.manual_seed(int(seed))
        return gen

    def _run(self) -> None:
        try:
            with self.torch.inference_mode():
                while True:
                    with self._cond:
                        while not (self._closed or self._waiting or self._active or self._commands):
                            self._cond.wait()
                        if self._closed:
                            break
                        commands = list(self._commands)
                        self._commands.clear()
                        admitted = self._admit_locked()
                        self._drop_idle_adapters_locked()
                    for fn, future in commands:
                        try:
                            future.set_result(fn())
                        except Exception as exc:
                            future.set_exception(exc)
                    try:
                        self._prune(incoming=len(admitted))
                        if admitted:
                            self._prefill(admitted)
                            self._prune()
                        if self._active:
                            self._decode_step()
                    except Exception as exc:  # fail this batch's requests, keep serving the next ones
                        logger.exception("generation step failed")
                        message = f"generation failed: {type(exc).__name__}: {exc}"
                        for seq in {id(s): s for s in self._active + admitted if s is not None}.values():
                            if not seq.finish_reason:
                                seq.send({"type": "error", "message": message})
                        self._active, self._batch = [], None
        except BaseException as exc:  # a bug or OOM: fail every request loudly rather than hang them
            logger.exception("generation loop crashed")
            self._error = exc
        message = f"generation engine stopped: {type(self._error).__name__}: {self._error}" if self._error else "closed"
        with self._cond:
            for seq in list(self._waiting) + self._active:
                if seq is not None and not seq.finish_reason:
                    seq.send({"type": "error", "message": message})
            self._waiting.clear()
            self._active.clear()
            for _fn, future in self._commands:
                future.set_exception(EngineClosed(message))
            self._commands.clear()

    def _admit_locked(self) -> list[_Sequence]:
        admitted: list[_Sequence] = []
        budget = self.prefill_token_budget
        live = self._live_rows()
        while self._waiting and live + len(admitted) < self.max_batch_size:
            seq = self._waiting[0]
            if seq.cancelled:
                self._waiting.popleft()
                continue
            # A long prompt still gets in alone; the budget only stops many long prompts stalling decodes at once.
            if admitted and len(seq.request.prompt_ids) > budget:
                break
            budget -= len(seq.request.prompt_ids)
            admitted.append(self._waiting.popleft())
        return admitted

    def _drop_idle_adapters_locked(self) -> None:
        for name in list(self._adapters_to_drop):
            if self._adapter_users.get(name, 0) > 0:
                continue
            self._adapters_to_drop.discard(name)
            self._adapter_users.pop(name, None)
            # peft cannot drop its last adapter; keeping one loaded costs only its (small) LoRA weights.
            if self.uses_adapters and name in self.model.peft_config and len(self.model.peft_config) > 1:
                self.model.delete_adapter(name)
                logger.info("unloaded adapter %s", name)

    def _adapter_kwargs(self, rows: list[_Sequence]) -> dict:
        if not self.uses_adapters:
            return {}
        return {"adapter_names": [(s.request.adapter if _is_live(s) else None) or BASE_ADAPTER for s in rows]}

    def _prefill(self, seqs: list[_Sequence]) -> None:
        """Prefill newly admitted rows together: each row's cached prefix (if any) becomes its past, left-padded
        to the longest one, and only the rest of its prompt runs through the model."""
        from transformers import DynamicCache

        torch = self.torch
        hits = [self.prefix_cache.lookup(s.request.prompt_ids, s.request.adapter) for s in seqs]
        past = [hit[0] for hit in hits]
        suffixes = [s.request.prompt_ids[n:] for s, n in zip(seqs, past, strict=True)]
        p_width, s_width = max(past), max(len(x) for x in suffixes)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), s_width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), p_width + s_width), dtype=torch.long)
        positions = torch.zeros((len(seqs), s_width), dtype=torch.long)
        for row, (n, suffix) in enumerate(zip(past, suffixes, strict=True)):
            ids[row, s_width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            mask[row, p_width - n : p_width] = 1
            mask[row, p_width + s_width - len(suffix) :] = 1
            positions[row, s_width - len(suffix) :] = torch.arange(n, n + len(suffix))
        cache = DynamicCache(config=self.model.config)
        if p_width:
            for layer, (keys, values) in enumerate(_stack_past(hits, p_width)):
                cache.update(keys.to(self.device), values.to(self.device), layer)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapter_kwargs(seqs),
        )
        self.stats["prefills"] += 1
        self.stats["prompt_tokens"] += sum(len(s.request.prompt_ids) for s in seqs)
        self.stats["prefix_cached_tokens"] += sum(past)
        mask = mask.to(self.device)
        for row, seq in enumerate(seqs):
            self.prefix_cache.store(seq.request.prompt_ids, seq.request.adapter, cache, row, mask[row])
        tokens = self._sample(out.logits[:, -1, :], seqs)
        next_pos = torch.tensor([len(s.request.prompt_ids) for s in seqs], dtype=torch.long, device=self.device)
        if self._batch is None:
            self._batch = _BatchState(cache, mask, next_pos, tokens, self.max_batch_size)
            slots = list(range(len(seqs)))
        else:
            rows_before = self._batch.rows
            slots = self._batch.admit(cache, mask, next_pos, tokens)
            self.stats["reused_slots"] += sum(1 for slot in slots if slot < rows_before)
        self._active.extend([None] * (self._batch.rows - len(self._active)))
        for slot, seq in zip(slots, seqs, strict=True):
            self._active[slot] = seq
        self._emit(seqs, tokens.tolist())

    def _decode_step(self) -> None:
        torch = self.torch
        b = self._batch
        mask = torch.cat([b.mask, torch.ones((b.mask.shape[0], 1), dtype=b.mask.dtype, device=self.device)], dim=1)
        out = self.model(
            input_ids=b.last[:, None],
            attention_mask=mask,
            position_ids=b.next_pos[:, None],
            cache=b.cache,
            use_cache=True,
            **self._adapter_kwargs(self._active),
        )
        b.mask = mask
        b.next_pos = b.next_pos + 1
        tokens = self._sample(out.logits[:, -1, :], self._active)
        b.last = tokens
        self.stats["steps"] += 1
        live = self._live_rows()
        self.stats["max_batch"] = max(self.stats["max_batch"], live)
        if self.on_batch is not None:
            self.on_batch(live)
        self._emit(self._active, tokens.tolist())

    def _sample(self, logits, seqs: list[_Sequence]):
        torch = self.torch
        logits = logits.float()
        tokens = logits.argmax(dim=-1)
        for row, seq in enumerate(seqs):
            p = seq.request.params
            if p.temperature <= 0 or not _is_live(seq):
                continue
            scores = logits[row] / p.temperature
            if p.top_p < 1.0:
                sorted_scores, order = torch.sort(scores, descending=True)
                probs = torch.softmax(sorted_scores, dim=-1)
                # Keep the smallest prefix whose mass reaches top_p (always at least the best token).
                drop = probs.cumsum(-1) - probs > p.top_p
                sorted_scores[drop] = float("-inf")
                scores = torch.full_like(scores, float("-inf")).scatter(0, order, sorted_scores)
            probs = torch.softmax(scores, dim=-1)
            tokens[row] = torch.multinomial(probs, 1, generator=seq.generator)[0]
        return tokens

    def _emit(self, seqs: list[_Sequence], tokens: list[int]) -> None:
        for seq, token in zip(seqs, tokens, strict=True):
            if seq.cancelled or seq.finish_reason:
                continue
            p = seq.request.params
            seq.generated += 1
            if seq.generated == 1:
                seq.first_token_s = time.perf_counter() - seq.arrived
            self.stats["generated_tokens"] += 1
            if token in p.stop_token_ids:
                seq.finish_reason = "stop"
            else:
                seq.ids.append(token)
                seq.text = self.tokenizer.decode(seq.ids, skip_special_tokens=True)
                cut = _find_stop(seq.text, p.stop, seq.emitted)
                if cut is not None:
                    seq.text = seq.text[:cut]
                    seq.finish_reason = "stop"
                elif len(seq.ids) >= p.max_tokens or len(seq.request.prompt_ids) + len(seq.ids) >= self.max_context:
                    seq.finish_reason = "length"
            if seq.request.stream:
                upto = len(seq.text) if seq.finish_reason else _safe_prefix_len(seq.text, p.stop)
                if upto > seq.emitted:
                    seq.send({"type": "delta", "text": seq.text[seq.emitted : upto]})
                    seq.emitted = upto
            if seq.finish_reason:
                seq.send(
                    {
                        "type": "done",
                        "text": seq.text,
                        "finish_reason": seq.finish_reason,
                        "prompt_tokens": len(seq.request.prompt_ids),
                        "completion_tokens": seq.generated,
                        "ttft_s": seq.first_token_s,
                    }
                )

    def _live_rows(self) -> int:
        return sum(1 for s in self._active if _is_live(s))

    def _prune(self, incoming: int = 0) -> None:
        """Retire finished or abandoned rows. A retired row keeps its slot (copying the whole cache to close the
        gap would cost more than the wasted row) until a new request takes it, it is the last slot, or retired
        rows outnumber live ones beyond the ``incoming`` requests about to fill them; then the batch is compacted."""
        b = self._batch
        if b is None:
            self._active = []
            return
        for slot, seq in enumerate(self._active):
            if not _is_live(seq) and slot not in b.free:
                b.retire(slot)
        live = len(self._active) - len(b.free)
        if live == 0:
            self._active, self._batch = [], None
            return
        del self._active[b.drop_trailing_free() :]
        if len(b.free) - incoming > live:
            self._active = [self._active[slot] for slot in b.compact()]
            self.stats["compactions"] += 1
        b.trim_left()


def _is_live(seq: _Sequence | None) -> bool:
    return seq is not None and not (seq.finish_reason or seq.cancelled)


# Spare columns kept before and after a running batch's keys and values: a longer prompt joining the batch, or
# 128 decode steps, fit without reallocating; a reallocation copies the batch once.
_HEAD_ROOM, _TAIL_ROOM = 64, 128


@functools.cache
def _slab_layer_class():
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        """One layer's running-batch keys and values, ``[rows, heads, T, dim]``, inside larger preallocated
        buffers. A decode step writes its column in place, where ``DynamicLayer`` concatenates (a copy of the
        whole cache per step: half a decode step's time at batch 32 on a CPU); ``keys``/``values`` are views of
        the used part, so the model and the rest of transformers' ``Cache`` machinery see an ordinary layer."""

        is_croppable = False

        def __init__(self, keys, values, rows_cap: int):
            super().__init__()
            self.device = keys.device
            self.is_initialized = True
            self._place(keys, values, rows_cap, left_gap=0)

        def _place(self, keys, values, rows_cap: int, left_gap: int) -> None:
            # Zeroed, not empty: columns outside a row's mask are still multiplied by the query, and
            # uninitialised memory can hold NaN, which a -inf mask does not cancel.
            rows, heads, width, dim = keys.shape
            cap = _HEAD_ROOM + left_gap + width + _TAIL_ROOM
            k = keys.new_zeros((max(rows_cap, rows), heads, cap, dim))
            v = values.new_zeros((max(rows_cap, rows), heads, cap, dim))
            at = _HEAD_ROOM + left_gap
            k[:rows, :, at : at + width] = keys
            v[:rows, :, at : at + width] = values
            self._k, self._v, self._rows, self._start, self._end = k, v, rows, _HEAD_ROOM, at + width
            self._refresh()

        def _refresh(self) -> None:
            self.keys = self._k[: self._rows, :, self._start : self._end]
            self.values = self._v[: self._rows, :, self._start : self._end]

        def update(self, key_states, value_states, *args, **kwargs):
            step = key_states.shape[-2]
            if self._end + step > self._k.shape[2]:
                self._place(self.keys, self.values, self._k.shape[0], left_gap=0)
            self._k[: self._rows, :, self._end : self._end + step] = key_states
            self._v[: self._rows, :, self._end : self._end + step] = value_states
            self._end += step
            self._refresh()
            return self.keys, self.values

        def widen(self, columns: int) -> None:
            """Add ``columns`` on the left (masked for the rows already there)."""
            if self._start >= columns:
                self._start -= columns
                self._refresh()
            else:
                self._place(self.keys, self.values, self._k.shape[0], left_gap=columns)

        def trim(self, columns: int) -> None:
            self._start += columns
            self._refresh()

        def resize_rows(self, rows: int, rows_cap: int) -> None:
            if rows > self._k.shape[0]:
                self._place(self.keys, self.values, rows_cap, left_gap=0)
            self._rows = rows
            self._refresh()

        def write_row(self, slot: int, keys, values) -> None:
            """Right-align one row's ``[heads, w, dim]`` keys and values in ``slot``."""
            width = keys.shape[1]
            self._k[slot, :, self._end - width : self._end] = keys
            self._v[slot, :, self._end - width : self._end] = values

        def select_rows(self, index) -> None:
            self._place(self.keys.index_select(0, index), self.values.index_select(0, index), self._k.shape[0], 0)

    return SlabLayer


class _BatchState:
    """The running batch: rows (slots) of one cache, left-padded so every row's next token lands in the same
    column, plus the mask (1 = a real token), each row's next position and the token to feed it next.

    Rows join in free slots or at the end and leave by being retired in place, so admitting or finishing a
    request copies only that request's keys and values, never the whole batch.
    """

    def __init__(self, cache, mask, next_pos, last, max_rows: int):
        slab = _slab_layer_class()
        cache.layers = [slab(layer.keys, layer.values, rows_cap=mask.shape[0]) for layer in cache.layers]
        self.cache, self.mask, self.next_pos, self.last = cache, mask, next_pos, last
        self.max_rows = max_rows
        self.free: set[int] = set()

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    def admit(self, cache, mask, next_pos, last) -> list[int]:
        """Copy freshly prefilled rows (their own left-padded ``cache`` and ``mask``) into free or new slots."""
        import torch

        firsts = [int(row.nonzero()[0]) for row in mask]
        widths = [mask.shape[1] - first for first in firsts]
        if max(widths) > self.mask.shape[1]:
            extra = max(widths) - self.mask.shape[1]
            for layer in self.cache.layers:
                layer.widen(extra)
            self.mask = _left_pad(self.mask, self.mask.shape[1] + extra, 1)
        reused = sorted(self.free)[: len(firsts)]
        appended = len(firsts) - len(reused)
        slots = reused + list(range(self.rows, self.rows + appended))
        self.free -= set(reused)
        if appended:
            rows = self.rows + appended
            cap = min(self.max_rows, max(rows, 2 * self.cache.layers[0]._k.shape[0]))
            for layer in self.cache.layers:
                layer.resize_rows(rows, cap)
            self.mask = torch.cat([self.mask, self.mask.new_zeros((appended, self.mask.shape[1]))])
            self.next_pos = torch.cat([self.next_pos, next_pos.new_zeros(appended)])
            self.last = torch.cat([self.last, last.new_zeros(appended)])
        width = self.mask.shape[1]
        for row, (slot, first, w) in enumerate(zip(slots, firsts, widths, strict=True)):
            for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
                mine.write_row(slot, theirs.keys[row, :, first:], theirs.values[row, :, first:])
            self.mask[slot] = 0
            self.mask[slot, width - w :] = mask[row, first:]
            self.next_pos[slot] = next_pos[row]
            self.last[slot] = last[row]
        return slots

    def retire(self, slot: int) -> None:
        # Keep one real column (the newest, never trimmed) so the idle row's attention stays well defined.
        self.free.add(slot)
        self.mask[slot] = 0
        self.mask[slot, -1] = 1

    def drop_trailing_free(self) -> int:
        """Cut retired slots at the end (free: nothing moves). Returns the number of slots left."""
        rows = self.rows
        while rows - 1 in self.free:
            self.free.discard(rows - 1)
            rows -= 1
        if rows < self.rows:
            for layer in self.cache.layers:
                layer.resize_rows(rows, rows)
            self.mask, self.next_pos, self.last = self.mask[:rows], self.next_pos[:rows], self.last[:rows]
        return rows

    def compact(self) -> list[int]:
        """Copy the live rows into fresh buffers; returns their old slots in their new order."""
        import torch

        keep = [slot for slot in range(self.rows) if slot not in self.free]
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        for layer in self.cache.layers:
            layer.select_rows(index)
        self.mask = self.mask.index_select(0, index)
        self.next_pos = self.next_pos.index_select(0, index)
        self.last = self.last.index_select(0, index)
        self.free = set()
        return keep

    def trim_left(self) -> None:
        """Columns that are padding for every row cost attention compute; moving the views past them is free."""
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else 0
        if start:
            for layer in self.cache.layers:
                layer.trim(start)
            self.mask = self.mask[:, start:]


class PrefixCache:
    """Recent prompts' keys and values, per adapter, least recently used first out, bounded in tokens.

    Entries are whole prompts: any prefix of an entry is valid for a prompt that starts the same way (keys
    carry their absolute rotary position, and position ``i`` is the same in both).
    """

    def __init__(self, max_tokens: int, min_tokens: int):
        from collections import OrderedDict

        self.max_tokens, self.min_tokens = max_tokens, min_tokens
        self._entries: OrderedDict = OrderedDict()  # (adapter, ids) -> [(keys, values) per layer], [1, H, T, D]
        self._tokens = 0

    def lookup(self, ids: list[int], adapter: str | None) -> tuple[int, list | None]:
        """Tokens of ``ids`` covered by the best entry (at least one token is left to prefill), and its layers."""
        best, best_key = 0, None
        for key in self._entries:
            if key[0] != adapter:
                continue
            n = _common_prefix(key[1], ids, len(ids) - 1)
            if n > best:
                best, best_key = n, key
        if best < self.min_tokens or best_key is None:
            return 0, None
        self._entries.move_to_end(best_key)
        return best, self._entries[best_key]

    def store(self, ids: list[int], adapter: str | None, cache, row: int, row_mask) -> None:
        if self.max_tokens <= 0 or len(ids) < self.min_tokens or len(ids) > self.max_tokens:
            return
        key = (adapter, tuple(ids))
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        columns = row_mask.nonzero().squeeze(-1)  # this row's prompt, skipping left padding and holes
        layers = [
            (layer.keys[row : row + 1, :, columns, :].clone(), layer.values[row : row + 1, :, columns, :].clone())
            for layer in cache.layers
        ]
        self._entries[key] = layers
        self._tokens += len(ids)
        while self._tokens > self.max_tokens:
            (_, old_ids), _ = self._entries.popitem(last=False)
            self._tokens -= len(old_ids)

    def __len__(self) -> int:
        return len(self._entries)


def _common_prefix(a: tuple, b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _stack_past(hits: list[tuple[int, list | None]], width: int):
    """Per layer, the rows' cached prefixes left-padded to ``width`` (zeros for rows without one)."""
    import torch

    template = next(layers for n, layers in hits if n)
    for layer, (k0, v0) in enumerate(template):
        keys, values = [], []
        for n, layers in hits:
            if n:
                k, v = layers[layer][0][:, :, :n, :], layers[layer][1][:, :, :n, :]
            else:
                k, v = k0[:, :, :0, :], v0[:, :, :0, :]
            keys.append(_left_pad(k, width, 2))
            values.append(_left_pad(v, width, 2))
        yield torch.cat(keys, dim=0), torch.cat(values, dim=0)


def _left_pad(tensor, width: int, dim: int):
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=dim)


def _find_stop(text: str, stops: list[str], emitted: int) -> int | None:
    """Index where the earliest stop string starts, searching only text that could contain a new match."""
    best = None
    for stop in stops:
        idx = text.find(stop, max(0, emitted - len(stop) + 1))
        if idx != -1 and (best is None or idx < best):
            best = idx
    return best


def _safe_prefix_len(text: str, stops: list[str]) -> int:
    """How much text can be streamed now: hold back a partial UTF-8 character or a possible stop-string start."""
    end = len(text) - 1 if text.endswith("\ufffd") else len(text)
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, end), hold, -1):
            if text[:end].endswith(stop[:k]):
                hold = k
                break
    return end - hold


def context_length(config) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
