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
