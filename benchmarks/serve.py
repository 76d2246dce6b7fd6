"""Serving throughput: many concurrent clients against ``buildlm serve`` vs one request at a time.

A small random-weight checkpoint is written to a temporary folder and served by
``buildlm serve`` in a subprocess on 127.0.0.1 (a free port; no other traffic). ``--clients``
asyncio clients (httpx) each send ``--requests`` completion requests one after the other,
half of them streamed; every request asks for exactly ``--new-tokens`` tokens (``ignore_eos``)
with its own seed, so the work is fixed. All must succeed.

Then the very same requests (same prompt ids, same settings and seeds) run one at a time through
``Engine.generate`` in this process, on the same number of torch threads: what a server without
batching could do at best (no HTTP at all). The ratio of the two wall times is the gain from
batching. The server's answers are also compared with the engine's (same seed -> same text).

    python benchmarks/serve.py          # 64 clients x 4 requests, "tiny" preset, 48 new tokens
    python benchmarks/serve.py --tiny   # 50 clients x 1 request, a toy model, seconds (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from buildlm.data.corpora import load_corpus
from buildlm.infer.engine import Engine
from buildlm.infer.load import load_model
from buildlm.infer.requests import SamplingParams
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer
from buildlm.train.checkpoint import save_checkpoint

MODEL = "bench"


def make_checkpoint(folder: Path, tiny: bool) -> tuple[Path, Tokenizer]:
    text = load_corpus("the-verdict")
    tok = Tokenizer.train(text, 300 if tiny else 512, progress=False)
    torch.manual_seed(0)
    shape = dict(d_model=32, n_layers=2, n_heads=2, context_length=128) if tiny else {}
    config = ModelConfig.preset("tiny", vocab_size=tok.vocab_size, **shape)
    model = GPT(config)
    path = save_checkpoint(folder, 1, model, {"model": config.to_dict()}, tokenizer=tok)
    return path, tok


def start_server(ckpt: Path, threads: int, max_batch: int, max_tokens: int) -> tuple:
    cmd = [
        sys.executable, "-m", "buildlm", "serve", "--model", str(ckpt), "--name", MODEL,
        "--host", "127.0.0.1", "--port", "0", "--threads", str(threads), "--log-level", "warning",
        "--max-batch-size", str(max_batch), "--max-tokens", str(max_tokens),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            match = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
            if match:
                return proc, match.group()
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()}")
    proc.kill()
    raise SystemExit("the server did not start within 120 s")


def make_requests(tok: Tokenizer, n: int, new_tokens: int, seed: int = 0) -> list[dict]:
    """``n`` completion requests: excerpts of the corpus (8-48 tokens), one seed each."""
    ids = tok.encode(load_corpus("the-verdict"))
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        length = rng.randint(8, 48)
        start = rng.randrange(len(ids) - length)
        requests.append(
            {"model": MODEL, "prompt": ids[start : start + length], "max_tokens": new_tokens,
             "temperature": 0.8, "top_p": 0.95, "seed": 1000 + i, "ignore_eos": True,
             "stream": i % 2 == 1, "stream_options": {"include_usage": True}}
        )  # fmt: skip
    return requests


async def one_request(client: httpx.AsyncClient, body: dict) -> dict:
    """Send one request; its text, completion tokens, latency and time to first token."""
    t0 = time.perf_counter()
    if not body["stream"]:
        response = await client.post("/v1/completions", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text}")
        answer = response.json()
        latency = time.perf_counter() - t0
        return {"text": answer["choices"][0]["text"], "latency": latency, "ttft": latency,
                "tokens": answer["usage"]["completion_tokens"]}  # fmt: skip
    text, tokens, ttft = [], 0, None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {await response.aread()!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["text"] and ttft is None:
                    ttft = time.perf_counter() - t0
                text.append(choice["text"])
    latency = time.perf_counter() - t0
    return {"text": "".join(text), "latency": latency, "ttft": ttft or latency, "tokens": tokens}


async def run_clients(url: str, requests: list[dict], clients: int, timeout: float) -> list[dict]:
    """``clients`` concurrent clients share the requests round-robin, each one at a time."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    results: list[dict | None] = [None] * len(requests)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def worker(k: int) -> None:
            for i in range(k, len(requests), clients):
                results[i] = await one_request(client, requests[i])

        await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(clients))), timeout)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a toy model, seconds (CI)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (server and baseline)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds for all clients")
    args = parser.parse_args()
    if args.tiny:
        args.clients, args.requests, args.new_tokens = 50, 1, 8
    if args.clients < 50:
        print(f"note: {args.clients} clients (fewer than the 50 this benchmark is meant for)")
    torch.set_num_threads(args.threads)
    n = args.clients * args.requests
    with tempfile.TemporaryDirectory() as folder:
        ckpt, tok = make_checkpoint(Path(folder), args.tiny)
        requests = make_requests(tok, n, args.new_tokens)
        proc, url = start_server(ckpt, args.threads, args.clients, args.new_tokens)
        try:
            asyncio.run(run_clients(url, requests[: min(4, n)], 4, args.timeout))  # warm-up
            t0 = time.perf_counter()
            results = asyncio.run(run_clients(url, requests, args.clients, args.timeout))
            served_s = time.perf_counter() - t0
            stats = httpx.get(url + "/health").json()["stats"]
        finally:
            proc.terminate()
            proc.wait(30)
        model, tokenizer = load_model(ckpt)
        cfg = model.config
        engine = Engine(model, tokenizer)
        engine.generate([requests[0]["prompt"]], max_new_tokens=2)  # warm-up
        t0 = time.perf_counter()
        solo = [
            engine.generate(
                [r["prompt"]],
                SamplingParams(max_new_tokens=r["max_tokens"], temperature=r["temperature"],
                               top_p=r["top_p"], seed=r["seed"], stop_token_ids=()),
            )[0]
            for r in requests
        ]  # fmt: skip
        solo_s = time.perf_counter() - t0

    tokens = [r["tokens"] for r in results]
    if any(t != args.new_tokens for t in tokens):
        raise SystemExit(f"a request came back short: {sorted(set(tokens))} tokens")
    same = sum(r["text"] == c.text for r, c in zip(results, solo, strict=True))
    latency = np.array([r["latency"] for r in results]) * 1000
    ttft = np.array([r["ttft"] for r in results if r is not None]) * 1000
    total = sum(tokens)
    print(
        f"model: 'tiny' preset {cfg.d_model}d x {cfg.n_layers}L, vocab {cfg.vocab_size}, context "
        f"{cfg.context_length}; torch threads {args.threads}; {os.cpu_count()} CPUs"
    )
    print(
        f"{args.clients} concurrent clients x {args.requests} requests = {n} requests "
        f"(half streamed), prompts 8-48 tokens, {args.new_tokens} new tokens each, sampled"
    )
    print(f"all {n} requests succeeded; {same}/{n} texts identical to Engine.generate's")
    print(
        f"server: {stats['prefills']} prefills, {stats['decode_steps']} decode steps, "
        f"largest batch {stats['largest_batch']} rows"
    )
    print(f"\n{'run':<40}{'wall s':>8}{'req/s':>9}{'tok/s':>9}")
    print(f"{'batched server (HTTP, ' + str(args.clients) + ' clients)':<40}"
          f"{served_s:8.2f}{n / served_s:9.1f}{total / served_s:9.1f}")  # fmt: skip
    print(f"{'one at a time, Engine.generate (no HTTP)':<40}"
          f"{solo_s:8.2f}{n / solo_s:9.1f}{total / solo_s:9.1f}")  # fmt: skip
    print(f"ratio (one at a time / batched server): {solo_s / served_s:.2f}x")
    print(
        f"latency per request: p50 {np.percentile(latency, 50):.0f} ms, "
        f"p99 {np.percentile(latency, 99):.0f} ms; time to first token (streamed and not): "
        f"p50 {np.percentile(ttft, 50):.0f} ms, p99 {np.percentile(ttft, 99):.0f} ms"
    )


if __name__ == "__main__":
    main()
