"""A request's tokens never depend on the other requests in flight, even across a window slide.

The test model's context is 128 tokens, so a sequence slides at 129 and keeps its last 96. The
requests below are long enough that their neighbours slide while they run with more than 96
tokens: a scheduler that slid every row whenever one row was full would cut them too.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

TEXT = (
    "I had always thought Jack Gisburn rather a cheap genius though a good fellow enough so "
    "it was no great surprise to me to hear that, in the height of his glory, he had dropped "
    "his painting, married a rich widow, and established himself in a villa on the Riviera. "
)


def _ids(engine, n: int, shift: int = 0) -> list[int]:
    ids = engine.tokenizer.encode(TEXT * 6)
    return ids[shift : shift + n]


def _complete(url: str, body: dict) -> list[str]:
    """The streamed pieces of one completion (the text is compared piece-joined)."""
    pieces = []
    with (
        httpx.Client(base_url=url, timeout=120) as http,
        http.stream("POST", "/v1/completions", json=body) as response,
    ):
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                pieces.append(json.loads(line[6:])["choices"][0]["text"])
    return pieces


def test_engine_rows_slide_alone(engine):
    """`Engine.generate` over a batch: the short row is not cut when the long row slides."""
    short, long = _ids(engine, 100), _ids(engine, 125, shift=7)
    args = dict(max_new_tokens=45, temperature=0, stop_token_ids=())
    alone = engine.generate([short], **args)[0].token_ids
    together = engine.generate([short, long], **args)
    assert together[0].token_ids == alone
    assert together[1].token_ids == engine.generate([long], **args)[0].token_ids


def test_request_alone_and_in_a_busy_batch_gives_the_same_tokens(server, engine, model_name):
    ctx = engine.context_length
    assert ctx == 128
    jobs = {  # name: (prompt ids, max_tokens, sampling)
        "greedy": (_ids(engine, 100), 60, {"temperature": 0.0}),
        "seeded": (_ids(engine, 110, shift=3), 45, {"temperature": 0.8, "seed": 11}),
        "short": (_ids(engine, 30, shift=9), 40, {"temperature": 0.0}),
    }
    # Both long requests cross the context on their own (and slide once, alone).
    assert all(len(p) + n > ctx for p, n, _ in list(jobs.values())[:2])
    expected = {
        name: engine.generate(
            [ids], max_new_tokens=n, stop_token_ids=(), temperature=s["temperature"],
            seed=s.get("seed"),
        )[0].text
        for name, (ids, n, s) in jobs.items()
    }  # fmt: skip
    noisy_ids = _ids(engine, 125, shift=20)  # slides 4 tokens in, then every 33 tokens

    def body(ids, n, sampling, stream=True):
        return {"model": model_name, "prompt": ids, "max_tokens": n, "ignore_eos": True,
                "stream": stream, **sampling}  # fmt: skip

    # Alone first: the scheduler alone equals the engine alone (the slide included).
    for name, (ids, n, s) in jobs.items():
        assert "".join(_complete(server.url, body(ids, n, s))) == expected[name], name
    stats = server.scheduler.stats
    slides = stats.window_slides
    # Then busy: a neighbour that keeps sliding is already running when they arrive.
    neighbour_running = threading.Event()
    noisy_pieces: list[str] = []

    def noisy():
        with (
            httpx.Client(base_url=server.url, timeout=120) as http,
            http.stream("POST", "/v1/completions",
                        json=body(noisy_ids, 160, {"temperature": 0.0})) as response,
        ):  # fmt: skip
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    noisy_pieces.append(line)
                    neighbour_running.set()

    with ThreadPoolExecutor(4) as pool:
        neighbour = pool.submit(noisy)
        assert neighbour_running.wait(60)
        futures = {name: pool.submit(_complete, server.url, body(ids, n, s))
                   for name, (ids, n, s) in jobs.items()}  # fmt: skip
        got = {name: "".join(f.result()) for name, f in futures.items()}
        neighbour.result()
    assert got == expected
    assert stats.window_slides - slides >= 4  # the neighbour slid meanwhile (and both long ones)
    assert stats.largest_batch >= 2
