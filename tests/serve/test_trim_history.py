"""A conversation longer than the 128-token context, on a real server on loopback.

Without asking, the server keeps OpenAI's contract: 400 ``context_length_exceeded``. With the
buildlm extension ``"trim_history": true`` it leaves out the oldest whole turns, caps
``max_tokens`` at the room the prompt leaves and says how many messages it dropped. The reply
must be exactly what the engine writes for the kept conversation.
"""

from __future__ import annotations

import json

import httpx
import pytest

from buildlm.infer.chat_format import chat_format_for

QUESTIONS = [
    "Who was Jack Gisburn?",
    "Why did he give up painting?",
    "What did his wife think of it?",
    "Where did they live after that?",
    "What was in the studio?",
    "And the portrait of Stroud?",
]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def conversation(pairs: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You answer in one sentence."}]
    for i in range(pairs):
        msgs.append({"role": "user", "content": QUESTIONS[i]})
        msgs.append({"role": "assistant", "content": f"I had always thought him a genius {i}."})
    msgs.append({"role": "user", "content": QUESTIONS[pairs]})
    return msgs


def prompt_ids(engine, messages) -> list[int]:
    fmt = chat_format_for(engine.tokenizer)
    text = fmt.render(messages, add_generation_prompt=True)
    return engine.tokenizer.encode(text, allowed_special="all")


def kept_after_dropping(engine, messages, reserve: int) -> list[dict[str, str]]:
    """The expected survivors: the fewest oldest user/assistant pairs removed, tried in turn."""
    for drop in range(0, len(messages), 2):
        kept = messages[:1] + messages[1 + drop :]
        if len(prompt_ids(engine, kept)) + reserve <= 128:
            return kept
    raise AssertionError("nothing fits")


def test_without_the_field_a_long_conversation_is_context_length_exceeded(http, engine, model_name):
    messages = conversation(5)
    assert len(prompt_ids(engine, messages)) > 128
    response = http.post(
        "/v1/chat/completions", json={"model": model_name, "messages": messages, "max_tokens": 16}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "X-Dropped-Messages" not in response.headers


@pytest.mark.parametrize("max_tokens", [16, 4000])
def test_with_trim_history_the_oldest_turns_go_and_the_reply_fits(
    http, engine, model_name, max_tokens
):
    messages = conversation(5)
    body = {
        "model": model_name, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
        "trim_history": True, "ignore_eos": True,
    }  # fmt: skip
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()

    kept = kept_after_dropping(engine, messages, reserve=min(max_tokens, 128 // 4))
    dropped = len(messages) - len(kept)
    assert dropped > 0 and kept[0] == messages[0] and kept[-1] == messages[-1]
    assert answer["dropped_messages"] == dropped
    assert response.headers["X-Dropped-Messages"] == str(dropped)
    ids = prompt_ids(engine, kept)
    budget = min(max_tokens, 128 - len(ids))  # 4000 is capped at what the context leaves
    assert answer["usage"]["prompt_tokens"] == len(ids)
    fmt = chat_format_for(engine.tokenizer)
    want = engine.generate(
        [ids], max_new_tokens=budget, temperature=0, stop_token_ids=(), stop=fmt.stop_strings
    )[0]
    assert want.finish_reason == "length"  # ignore_eos: the whole (capped) budget is used
    assert answer["usage"]["completion_tokens"] == len(want.token_ids) == budget
    assert answer["choices"][0]["message"]["content"] == want.text


def test_a_streamed_reply_says_what_was_dropped_in_its_first_chunk(http, engine, model_name):
    messages = conversation(5)
    body = {
        "model": model_name, "messages": messages, "max_tokens": 16, "temperature": 0,
        "trim_history": True, "stream": True,
    }  # fmt: skip
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        dropped = response.headers["X-Dropped-Messages"]
        events = [
            json.loads(line[5:])
            for line in response.iter_lines()
            if line.startswith("data:") and line != "data: [DONE]"
        ]
    assert events[0]["dropped_messages"] == int(dropped) > 0
    assert all("dropped_messages" not in e for e in events[1:])
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    whole = http.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert text == whole["choices"][0]["message"]["content"]
    assert whole["dropped_messages"] == int(dropped)


def test_a_conversation_that_fits_drops_nothing(http, model_name):
    body = {"model": model_name, "messages": conversation(0), "max_tokens": 8}
    plain = http.post("/v1/chat/completions", json=body).json()
    assert "dropped_messages" not in plain  # OpenAI's shape unless asked
    trimmed = http.post("/v1/chat/completions", json={**body, "trim_history": True})
    assert trimmed.status_code == 200 and trimmed.json()["dropped_messages"] == 0


def test_a_question_too_long_even_alone_is_still_400(http, model_name):
    long = "I had always thought Jack Gisburn rather a cheap genius. " * 20
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": long}]
    body = {"model": model_name, "messages": messages, "trim_history": True}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "shorten the message" in error["message"]


def test_trim_history_must_be_a_boolean(http, model_name):
    body = {"model": model_name, "messages": conversation(0), "trim_history": "yes"}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and "trim_history" in response.text


def test_the_openai_client_asks_through_extra_body(server, model_name):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="-", max_retries=0, timeout=60)
    messages = conversation(5)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_name, messages=messages, max_tokens=8)
    assert info.value.code == "context_length_exceeded"
    answer = client.chat.completions.create(
        model=model_name, messages=messages, max_tokens=8, extra_body={"trim_history": True}
    )
    assert answer.model_extra["dropped_messages"] > 0 and answer.choices[0].message.content
