"""The official ``openai`` client against a live server: answers equal the Engine's own output.

The expected text is computed here with a separate `Engine` on the same checkpoint, rendering
the conversation the way ``buildlm chat`` does (the chat format of the tokenizer, stopping at
its end-of-turn text or end-of-text token), with the same seed and settings.
"""

from __future__ import annotations

import openai
import pytest

from buildlm.infer.chat_format import chat_format_for
from buildlm.infer.requests import SamplingParams

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What did Gisburn paint?"},
]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def expected_chat(engine, messages, **settings):
    fmt = chat_format_for(engine.tokenizer)
    prompt = fmt.render(messages, add_generation_prompt=True)
    stop = list(fmt.stop_strings) + list(settings.pop("stop", []))
    params = SamplingParams(stop=tuple(stop), stop_token_ids=None, **settings)
    return engine.generate([prompt], params)[0]


def test_chat_completion_equals_the_engine_greedy(client, engine, model_name):
    want = expected_chat(engine, MESSAGES, max_new_tokens=24, temperature=0)
    got = client.chat.completions.create(
        model=model_name, messages=MESSAGES, max_tokens=24, temperature=0
    )
    assert got.object == "chat.completion" and got.model == model_name
    choice = got.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == want.text and want.text
    assert choice.finish_reason == want.finish_reason
    assert got.usage.prompt_tokens == len(want.prompt_ids)
    assert got.usage.completion_tokens == len(want.token_ids)
    assert got.usage.total_tokens == len(want.prompt_ids) + len(want.token_ids)


def test_streamed_chat_equals_the_engine_with_a_seed(client, engine, model_name):
    settings = dict(max_new_tokens=30, temperature=0.9, top_p=0.95, seed=1234)
    want = expected_chat(engine, MESSAGES, **settings)
    stream = client.chat.completions.create(
        model=model_name, messages=MESSAGES, max_tokens=30, temperature=0.9, top_p=0.95,
        seed=1234, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    pieces, reasons, usage, roles = [], [], None, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            assert choice.index == 0
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert roles == ["assistant"]
    assert len(pieces) > 1  # really streamed, not one lump
    assert "".join(pieces) == want.text
    assert reasons == [want.finish_reason]
    assert usage.completion_tokens == len(want.token_ids)
    # A different seed gives a different answer, so the equality above is not luck.
    other = expected_chat(engine, MESSAGES, **{**settings, "seed": 99})
    assert other.text != want.text


def test_completions_with_several_prompts_and_n(client, engine, model_name):
    prompts = ["I had always thought", "She"]
    got = client.completions.create(
        model=model_name, prompt=prompts, max_tokens=12, temperature=1.0, seed=7, n=2
    )
    assert got.object == "text_completion" and len(got.choices) == 4
    by_index = {c.index: c for c in got.choices}
    texts = []
    for p, prompt in enumerate(prompts):
        for i in range(2):  # choice i of a prompt samples with seed + i
            want = engine.generate([prompt], max_new_tokens=12, temperature=1.0, seed=7 + i)[0]
            choice = by_index[p * 2 + i]
            assert choice.text == want.text
            assert choice.finish_reason == want.finish_reason
            texts.append(want.text)
    assert len(set(texts)) == 4
    assert got.usage.prompt_tokens == sum(len(engine.tokenizer.encode(p)) for p in prompts)


def test_streamed_completion_with_stop_string(client, engine, model_name):
    full = engine.generate(["The picture"], max_new_tokens=20, temperature=0)[0].text
    stop = full[5:7]  # a string the greedy text is known to contain
    want = engine.generate(["The picture"], max_new_tokens=20, temperature=0, stop=[stop])[0]
    assert want.finish_reason == "stop" and len(want.text) < len(full)
    stream = client.completions.create(
        model=model_name, prompt="The picture", max_tokens=20, temperature=0, stop=[stop],
        stream=True,
    )  # fmt: skip
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == want.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


def test_token_id_prompts_and_ignore_eos(client, engine, model_name):
    ids = engine.tokenizer.encode("Jack Gisburn")
    want = engine.generate([ids], max_new_tokens=40, temperature=0, stop_token_ids=())[0]
    got = client.completions.create(
        model=model_name, prompt=ids, max_tokens=40, temperature=0, extra_body={"ignore_eos": True}
    )
    assert got.choices[0].text == want.text
    assert got.usage.completion_tokens == 40 and got.choices[0].finish_reason == "length"


def test_models_endpoint(client, model_name):
    models = client.models.list()
    assert [m.id for m in models.data] == [model_name]
    assert client.models.retrieve(model_name).id == model_name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_unknown_model_is_a_404_the_client_understands(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=3)
    assert err.value.status_code == 404
    assert "gpt-4" in err.value.message and err.value.code == "model_not_found"
