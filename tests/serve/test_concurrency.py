"""Many clients at once: every answer equals its solo answer, and they really ran batched."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

PROMPTS = [
    "I had always thought",
    "Jack Gisburn",
    "It was no great surprise",
    "the height of his glory",
    "She",
    "Mrs. Gisburn",
    "his pictures",
    "The Riviera",
]


def test_concurrent_requests_each_equal_their_solo_result(server, engine, model_name):
    # Different lengths and settings in one batch: greedy, seeded sampling, penalties.
    jobs = []
    for i, prompt in enumerate(PROMPTS):
        settings = {"max_tokens": 20 + 7 * i, "temperature": 0.0}
        if i % 3 == 1:
            settings = {**settings, "temperature": 0.8, "seed": i}
        if i % 4 == 2:
            settings = {**settings, "frequency_penalty": 0.5}
        jobs.append((prompt, settings))
    expected = [
        engine.generate(
            [prompt], max_new_tokens=s["max_tokens"], temperature=s["temperature"],
            seed=s.get("seed"), frequency_penalty=s.get("frequency_penalty", 0.0),
            stop_token_ids=(),
        )[0].text
        for prompt, s in jobs
    ]  # fmt: skip
    assert len(set(expected)) == len(expected)  # distinct, so a swapped row would be caught
    before = server.scheduler.stats.largest_batch
    server.scheduler.stats.largest_batch = 0
    start = threading.Barrier(len(jobs))

    def ask(job):
        prompt, settings = job
        body = {"model": model_name, "prompt": prompt, "ignore_eos": True, **settings}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            start.wait()
            response = http.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            got = list(pool.map(ask, jobs))
        largest = server.scheduler.stats.largest_batch
    finally:
        server.scheduler.stats.largest_batch = max(before, server.scheduler.stats.largest_batch)
    assert got == expected
    assert largest > 1, "the requests never shared a batch"


def test_streams_interleave(server, model_name):
    """Two streams at once both progress (neither waits for the other to finish)."""
    order: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def stream(k: int) -> int:
        body = {"model": model_name, "prompt": PROMPTS[k], "max_tokens": 60, "temperature": 0,
                "ignore_eos": True, "stream": True}  # fmt: skip
        chunks = 0
        with httpx.Client(base_url=server.url, timeout=60) as http:
            start.wait()
            with http.stream("POST", "/v1/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        chunks += 1
                        with lock:
                            order.append(k)
        return chunks

    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(stream, [0, 1]))
    assert min(counts) > 30  # ~60 tokens; a piece of a UTF-8 character waits for the rest
    # Interleaved: the first stream to start had not finished when the other one began.
    first = order[0]
    other_starts = order.index(1 - first)
    assert other_starts < len(order) - counts[first]


def test_requests_that_join_a_running_batch_equal_their_solo_result(server, engine, model_name):
    """Continuous batching: B (a longer prompt than A's cache) and C (a shorter one) join while
    A runs. Nobody's text changes. (Slides across the context: test_isolation.py.)"""
    ids_b = engine.tokenizer.encode(" ".join(PROMPTS) * 2)[:60]
    jobs = {
        "A": {"prompt": "She", "max_tokens": 100},
        "B": {"prompt": ids_b, "max_tokens": 30},
        "C": {"prompt": "his pictures", "max_tokens": 25, "temperature": 0.7, "seed": 5},
    }
    expected = {
        name: engine.generate(
            [job["prompt"]], max_new_tokens=job["max_tokens"], stop_token_ids=(),
            temperature=job.get("temperature", 0.0), seed=job.get("seed"),
        )[0].text
        for name, job in jobs.items()
    }  # fmt: skip
    stats = server.scheduler.stats
    prefills = stats.prefills
    got: dict[str, str] = {}
    started = {name: threading.Event() for name in jobs}

    def run(name: str) -> None:
        body = {"model": model_name, "temperature": 0.0, "ignore_eos": True, "stream": True,
                **jobs[name]}  # fmt: skip
        text = []
        with (
            httpx.Client(base_url=server.url, timeout=60) as http,
            http.stream("POST", "/v1/completions", json=body) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    text.append(json.loads(line[6:])["choices"][0]["text"])
                    if len(text) == 3:
                        started[name].set()
        got[name] = "".join(text)

    # Staggered on purpose: B joins once A streams, C once B streams. Sent together, B and C
    # could be admitted in one prefill, which is correct but would not test two separate joins.
    with ThreadPoolExecutor(3) as pool:
        futures = []
        for name in jobs:
            futures.append(pool.submit(run, name))
            assert started[name].wait(30), f"{name} never streamed"
        for future in futures:
            future.result()
    assert got == expected
    assert stats.prefills - prefills >= 3  # A, B and C were each prefilled
