"""``buildlm serve --tools calculator``: a real server on loopback whose model calls the tool.

The model is a real GPT whose output is written in advance (`scripted_model`): after the chat
prompt it writes `` <tool>calculator: 23*58</tool>``, then ``x``s where the result goes, then
`` 1334`` and the end of text. With tools the server runs the call and feeds the result, so
the streamed reply shows the call, then ``<result>1334</result>``, then the answer; without
tools it is the model's own ``x``s, as before.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from buildlm.infer.chat_format import plain_prompt  # noqa: E402
from buildlm.serve import ServeLimits  # noqa: E402
from scripted_model import save_scripted, script_after, text_ids  # noqa: E402

QUESTION = "What is 23*58?"
CALL = " <tool>calculator: 23*58</tool>"
RESULT = "<result>1334</result>"
MESSAGES = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> Path:
    prompt = plain_prompt(MESSAGES, add_generation_prompt=True)
    said = text_ids(CALL + "x" * len(RESULT) + " 1334") + [256]  # then <|endoftext|>
    return save_scripted(tmp_path_factory.mktemp("scripted"), script_after(prompt, said))


def stream_chat(url: str, model: str) -> tuple[list[str], list[str | None]]:
    """The streamed reply's text pieces and finish reasons."""
    body = {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": 80,
        "temperature": 0,
        "stream": True,
    }
    pieces, reasons = [], []
    with (
        httpx.Client(base_url=url, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as reply,
    ):
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[len("data: ") :])["choices"][0]
            pieces.append(choice["delta"].get("content") or "")
            reasons.append(choice["finish_reason"])
    return pieces, reasons


def test_the_stream_shows_the_call_and_its_result(start_server, scripted, model_name):
    live = start_server(ServeLimits(max_tokens=200), checkpoint_dir=scripted, tools=("calculator",))
    pieces, reasons = stream_chat(live.url, model_name)
    text = "".join(pieces)
    assert text == CALL + RESULT + " 1334"
    assert reasons[-1] == "stop"
    # Streamed as it came, not in one piece at the end: the call's text came first.
    assert len([p for p in pieces if p]) > 3
    assert "".join(pieces[:2]) and RESULT not in "".join(pieces[:2])
    with httpx.Client(base_url=live.url, timeout=60) as http:
        body = {"model": model_name, "messages": MESSAGES, "max_tokens": 80, "temperature": 0}
        whole = http.post("/v1/chat/completions", json=body)
        assert whole.json()["choices"][0]["message"]["content"] == CALL + RESULT + " 1334"
        assert http.get("/v1/models").json()["data"][0]["tools"] == ["calculator"]
    live.stop()


def test_without_tools_nothing_changes(start_server, scripted, model_name):
    live = start_server(ServeLimits(max_tokens=200), checkpoint_dir=scripted)
    pieces, _ = stream_chat(live.url, model_name)
    assert "".join(pieces) == CALL + "x" * len(RESULT) + " 1334"
    live.stop()


def test_unknown_tools_are_refused(scripted):
    from buildlm.infer.engine import Engine
    from buildlm.infer.load import load_model
    from buildlm.serve import create_app

    engine = Engine(*load_model(scripted))
    with pytest.raises(ValueError, match="unknown tool"):
        create_app(engine, "m", tools=("abacus",))
