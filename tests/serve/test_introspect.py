"""The page's endpoints: tokenize and attention answer what the tokenizer and model compute."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import torch

from buildlm.infer.chat_format import chat_format_for

TEXT = "I had always thought Jack Gisburn rather a cheap genius—naïve 🙂"


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_tokenize_lists_each_token_with_its_bytes(http, engine):
    answer = http.post("/v1/tokenize", json={"text": TEXT}).json()
    ids = engine.tokenizer.encode(TEXT)
    assert answer["count"] == len(ids)
    assert [t["id"] for t in answer["tokens"]] == ids
    # The pieces' bytes put together are the text; a split character shows as U+FFFD.
    joined = b"".join(engine.tokenizer.token_bytes(t["id"]) for t in answer["tokens"])
    assert joined.decode() == TEXT
    assert any("\ufffd" in t["text"] for t in answer["tokens"])  # the emoji spans tokens
    assert not any(t["special"] for t in answer["tokens"])


def test_tokenize_a_conversation_uses_the_chat_format(http, engine):
    messages = [{"role": "user", "content": "Hi"}]
    answer = http.post(
        "/v1/tokenize", json={"messages": messages, "add_generation_prompt": True}
    ).json()
    prompt = chat_format_for(engine.tokenizer).render(messages, add_generation_prompt=True)
    assert "".join(t["text"] for t in answer["tokens"]) == prompt


def test_attention_is_the_models_own_weights(http, engine):
    answer = http.post("/v1/attention", json={"text": TEXT, "layer": 1, "head": 3}).json()
    ids = engine.tokenizer.encode(TEXT)
    with torch.no_grad():
        want = engine.model.get_attention_weights(torch.tensor([ids]))[1][0, 3]
    got = torch.tensor(answer["weights"])
    assert got.shape == (len(ids), len(ids))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert torch.all(got.triu(1) == 0)  # causal
    torch.testing.assert_close(got.sum(-1), torch.ones(len(ids)), atol=2e-3, rtol=0)
    assert (answer["n_layers"], answer["n_heads"], answer["truncated"]) == (2, 4, False)
    other = torch.tensor(
        http.post("/v1/attention", json={"text": TEXT, "head": 0}).json()["weights"]
    )
    assert not torch.allclose(other, got)


def test_attention_keeps_the_last_tokens_of_a_long_text(http, engine):
    long_text = TEXT * 20
    answer = http.post("/v1/attention", json={"text": long_text}).json()
    ids = engine.tokenizer.encode(long_text)
    assert answer["truncated"] is True
    assert [t["id"] for t in answer["tokens"]] == ids[-128:]  # the context length


def test_attention_runs_on_the_scheduler_thread_beside_a_generation(http, server, engine, model_name):
    """The heatmap's forward pass is a job of the scheduler thread (the only one that runs the
    model): asked while a long generation runs, it gives what it gives alone, and the
    generation gives what it gives alone."""
    ask = {"text": TEXT, "layer": 1, "head": 2}
    alone = http.post("/v1/attention", json=ask).json()
    prompt = engine.tokenizer.encode(TEXT)
    expected = engine.generate([prompt], max_new_tokens=600, temperature=0, stop_token_ids=())
    body = {"model": model_name, "prompt": prompt, "max_tokens": 600, "temperature": 0,
            "ignore_eos": True}  # fmt: skip
    got: list[str] = []

    def generate() -> None:
        answer = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
        got.append(answer.json()["choices"][0]["text"])

    scheduler = server.scheduler
    threads: set[str] = set()
    hook = scheduler.engine.model.tok_emb.register_forward_hook(
        lambda *_: threads.add(threading.current_thread().name)
    )
    jobs = scheduler.stats.jobs_run
    worker = threading.Thread(target=generate)
    try:
        worker.start()
        deadline = time.monotonic() + 60
        while scheduler.active_rows == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        for _ in range(5):
            assert http.post("/v1/attention", json=ask).json() == alone
        assert worker.is_alive()  # they really ran while it was generating
        worker.join(120)
    finally:
        hook.remove()
    assert got == [expected[0].text]
    assert threads == {"buildlm-scheduler"}  # every forward pass, generation and attention
    assert scheduler.stats.jobs_run - jobs == 5
