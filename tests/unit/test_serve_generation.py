"""The continuous-batching engine without Ray: it must return exactly what ``model.generate`` returns."""

from __future__ import annotations

import asyncio

import pytest
import torch

from moatforge.serve.generation import (
    BatchEngine,
    EngineOverloaded,
    GenerationRequest,
    SamplingParams,
    _find_stop,
    _safe_prefix_len,
)

PROMPTS = [
    "hello there",
    "a much longer prompt about invoices, orders, tickets and the reports that summarise them",
    "x",
    "what is the weather in Paris today?",
    "refund order 42",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from moatforge.models import load_model, load_tokenizer

    torch.set_num_threads(1)
    return load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)


@pytest.fixture()
def engine(tiny):
    model, tok = tiny
    eng = BatchEngine(model, tok, max_batch_size=4, max_waiting=8)
    yield eng
    eng.close()


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _reference(model, tok, ids, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return tok.decode(out[0, len(ids) :], skip_special_tokens=True)


async def _collect(engine, request, delay=0.0):
    await asyncio.sleep(delay)
    return [event async for event in engine.generate(request)]


def test_staggered_batched_requests_match_generate(tiny, engine):
    """Requests join a running batch at different steps (left-padded caches) and leave it early or late."""
    model, tok = tiny
    lengths = [12, 5, 9, 12, 3]
    ids = [_ids(tok, p) for p in PROMPTS]

    async def run():
        jobs = [
            _collect(
                engine, GenerationRequest(i, SamplingParams(max_tokens=n, temperature=0), stream=k % 2 == 0), k * 0.01
            )
            for k, (i, n) in enumerate(zip(ids, lengths, strict=True))
        ]
        return await asyncio.gather(*jobs)

    results = asyncio.run(run())
    for k, events in enumerate(results):
        done = events[-1]
        assert done["type"] == "done" and done["finish_reason"] == "length"
        assert done["text"] == _reference(model, tok, ids[k], lengths[k])
        assert done["completion_tokens"] == lengths[k] and done["prompt_tokens"] == len(ids[k])
        if k % 2 == 0:  # streamed: the deltas add up to the text
            assert "".join(e["text"] for e in events[:-1]) == done["text"]
    assert engine.load_stats()["max_batch"] > 1


def test_stop_strings_cut_the_text_and_are_never_streamed(tiny, engine):
    model, tok = tiny
    ids = _ids(tok, PROMPTS[1])
    full = _reference(model, tok, ids, 10)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    request = GenerationRequest(ids, SamplingParams(max_tokens=10, temperature=0, stop=[stop]), stream=True)
    events = asyncio.run(_collect(engine, request))
    assert events[-1]["finish_reason"] == "stop"
    assert events[-1]["text"] == full[: full.index(stop)]
    assert stop not in "".join(e["text"] for e in events[:-1])


def test_stop_token_ends_the_turn(tiny, engine):
    model, tok = tiny
    ids = _ids(tok, PROMPTS[0])
    first = tok(_reference(model, tok, ids, 1), add_special_tokens=False)["input_ids"][0]
    request = GenerationRequest(ids, SamplingParams(max_tokens=10, temperature=0, stop_token_ids=[first]))
    done = asyncio.run(_collect(engine, request))[-1]
    assert done["finish_reason"] == "stop" and done["text"] == "" and done["completion_tokens"] == 1


def test_seeded_sampling_is_reproducible_whatever_the_batch(tiny, engine):
    _, tok = tiny
    ids = _ids(tok, PROMPTS[3])
    params = {"max_tokens": 8, "temperature": 1.0, "top_p": 0.9, "seed": 11}

    async def run():
        alone = await _collect(engine, GenerationRequest(ids, SamplingParams(**params)))
        crowd = await asyncio.gather(
            _collect(engine, GenerationRequest(ids, SamplingParams(**params))),
            _collect(engine, GenerationRequest(_ids(tok, PROMPTS[1]), SamplingParams(max_tokens=8, temperature=1.0))),
        )
        return alone, crowd[0]

    alone, crowded = asyncio.run(run())
    assert alone[-1]["text"] == crowded[-1]["text"]


def test_full_waiting_queue_is_refused_and_context_is_checked(tiny):
    model, tok = tiny
    eng = BatchEngine(model, tok, max_batch_size=1, max_waiting=1, max_context=64)
    try:
        with pytest.raises(ValueError, match="context"):
            asyncio.run(_collect(eng, GenerationRequest([1] * 60, SamplingParams(max_tokens=10))))

        async def flood():
            jobs = [_collect(eng, GenerationRequest([5, 6, 7], SamplingParams(max_tokens=30))) for _ in range(6)]
            return await asyncio.gather(*jobs, return_exceptions=True)

        results = asyncio.run(flood())
        assert any(isinstance(r, EngineOverloaded) for r in results)
        assert any(isinstance(r, list) for r in results)
    finally:
        eng.close()


def test_abandoned_request_leaves_the_batch(tiny, engine):
    _, tok = tiny

    async def run():
        gen = engine.generate(GenerationRequest(_ids(tok, PROMPTS[0]), SamplingParams(max_tokens=200), stream=True))
        await gen.__anext__()
        await gen.aclose()
        await asyncio.sleep(0.3)
        return engine.load_stats()

    assert asyncio.run(run())["running"] == 0


def test_stream_holdback_helpers():
    assert _find_stop("abc STOP def", ["STOP"], 0) == 4
    assert _find_stop("abc", ["STOP"], 0) is None
    assert _safe_prefix_len("hello ST", ["STOP"]) == len("hello ")
    assert _safe_prefix_len("hello", ["STOP"]) == 5
    assert _safe_prefix_len("caf\ufffd", []) == 3


SYSTEM = (
    "system: you are the operations assistant. tools: get_order_status(order_id), issue_refund(order_id, amount, "
    "reason), create_ticket(title, priority, team), check_inventory(sku, warehouse). user: "
)


def test_prompts_sharing_a_prefix_reuse_its_cache_and_return_what_generate_returns(tiny):
    """An application sends the same system prompt and tools every time: later requests prefill only their own
    part, alone or batched with rows of other prefix lengths, and still match plain ``generate`` exactly."""
    model, tok = tiny
    eng = BatchEngine(model, tok, max_batch_size=4, max_waiting=8, min_prefix_tokens=4)
    questions = ["where is order 42?", "refund order 7, it arrived broken", "stock of sku AB-1 in berlin", "hi"]
    ids = [_ids(tok, SYSTEM + q) for q in questions]
    try:

        async def one(i):
            return await _collect(eng, GenerationRequest(i, SamplingParams(max_tokens=6, temperature=0)))

        async def run():
            first = await one(ids[0])  # fills the cache
            others = await asyncio.gather(*(one(i) for i in ids[1:] + [_ids(tok, "unrelated words here")]))
            return [first, *others]

        results = asyncio.run(run())
        for events, prompt in zip(results, ids + [_ids(tok, "unrelated words here")], strict=True):
            assert events[-1]["text"] == _reference(model, tok, prompt, 6)
        stats = eng.load_stats()
        shared = len(_ids(tok, SYSTEM)) - 2  # the tokenizer may merge across the boundary
        assert stats["prefix_cached_tokens"] >= 3 * shared, stats
        assert stats["prefix_cached_tokens"] < stats["prompt_tokens"]
    finally:
        eng.close()


def test_prefix_cache_keeps_adapters_apart_and_stays_within_its_token_budget():
    from moatforge.serve.generation import PrefixCache

    cache = PrefixCache(max_tokens=10, min_tokens=2)
    layer = [(torch.arange(4.0).reshape(1, 1, 4, 1), -torch.arange(4.0).reshape(1, 1, 4, 1))]

    class FakeCache:  # the shape DynamicCache has: .layers with .keys / .values  [B, H, T, D]
        def __init__(self, k, v):
            self.layers = [type("L", (), {"keys": k, "values": v})()]

    cache.store([1, 2, 3, 4], None, FakeCache(*layer[0]), 0, torch.ones(4, dtype=torch.long))
    n, layers = cache.lookup([1, 2, 3, 9, 9], None)
    assert n == 3 and torch.equal(layers[0][0][:, :, :n], layer[0][0][:, :, :3])
    assert cache.lookup([1, 2, 3, 9], "billing") == (0, None)  # another adapter's keys differ
    assert cache.lookup([1, 2, 3, 4], None)[0] == 3  # a repeated prompt still prefills its last token
    assert cache.lookup([1, 5], None) == (0, None)  # below min_tokens
    for start in range(3):  # 3 more 4-token prompts: the oldest entries fall out to stay within 10 tokens
        cache.store([7 + start, 1, 1, 1], None, FakeCache(*layer[0]), 0, torch.ones(4, dtype=torch.long))
    assert len(cache) == 2 and cache.lookup([1, 2, 3, 9], None) == (0, None)


def test_rows_reuse_finished_slots_widen_for_longer_prompts_and_compact(tiny):
    """A finished row's slot goes to the next request (a longer prompt widens the batch on the left), and once
    finished rows outnumber live ones the batch is compacted; every answer still equals ``model.generate``."""
    model, tok = tiny
    short, other, long_ = _ids(tok, PROMPTS[0]), _ids(tok, PROMPTS[4]), _ids(tok, PROMPTS[1])
    assert len(long_) > max(len(short), len(other)) + 3
    eng = BatchEngine(model, tok, max_batch_size=3, max_waiting=8)
    # Admitted together: a, b, c; a ends first and d (long) takes its slot; then b, d, c... leave c alone.
    plan = [(short, 3), (other, 4), (short, 16), (long_, 5), (other, 2)]
    try:

        async def run():
            jobs = [
                _collect(eng, GenerationRequest(ids, SamplingParams(max_tokens=n, temperature=0))) for ids, n in plan
            ]
            return await asyncio.gather(*jobs)

        results = asyncio.run(run())
        stats = eng.load_stats()
    finally:
        eng.close()
    for (ids, n), events in zip(plan, results, strict=True):
        assert events[-1]["text"] == _reference(model, tok, ids, n)
        assert events[-1]["completion_tokens"] == n
    assert stats["reused_slots"] >= 1
    assert stats["compactions"] >= 1
    assert stats["running"] == 0
