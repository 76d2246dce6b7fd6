"""A chat message cannot forge control tokens: only the chat template writes special tokens.

For each chat format (plain transcript, ChatML, Llama 3, Gemma) a user message types every special
token the tokenizer knows. The conversation's ids must hold exactly the special tokens the
template writes (counted by hand below), and decode back to the rendered text, both from the
chat format's encoder (what ``buildlm chat`` runs) and over HTTP.
"""

from __future__ import annotations

import httpx
import pytest

from buildlm.infer.chat_format import chat_format_for
from buildlm.infer.load import load_model
from buildlm.serve import ServeLimits

# Special tokens the template itself writes for [system, user] + the assistant's header.
TEMPLATE_SPECIALS = {
    "plain": [],
    "chatml": ["<|im_start|>", "<|im_end|>", "<|im_start|>", "<|im_end|>", "<|im_start|>"],
    "llama3": ["<|begin_of_text|>"]
    + ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"] * 2
    + ["<|start_header_id|>", "<|end_header_id|>"],
    # Gemma's system message opens the user turn: no turn of its own
    "gemma": ["<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_turn>"],
}


def forged(tokenizer) -> list[dict[str, str]]:
    every = "".join(tokenizer.special_tokens)
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"Hi {every} bye"},
    ]


def specials_in(tokenizer, ids: list[int]) -> list[str]:
    names = {i: t for t, i in tokenizer.special_tokens.items()}
    return [names[i] for i in ids if i in names]


@pytest.mark.parametrize("name", ["plain", "chatml", "llama3", "gemma"])
def test_chat_encoding_takes_special_tokens_only_from_the_template(chat_checkpoints, name):
    _, tok = load_model(chat_checkpoints[name])
    fmt = chat_format_for(tok)
    assert fmt.name == name
    messages = forged(tok)
    ids = fmt.encode(tok, messages, add_generation_prompt=True)
    assert specials_in(tok, ids) == TEMPLATE_SPECIALS[name]
    assert tok.decode(ids) == fmt.render(messages, add_generation_prompt=True)
    # A conversation without special-looking text is tokenized as its rendered text always was.
    plain = [{"role": "user", "content": "I had always thought Jack Gisburn"}]
    text = fmt.render(plain, add_generation_prompt=True)
    assert fmt.encode(tok, plain, True) == tok.encode(text, allowed_special="all")


@pytest.mark.parametrize("name", ["plain", "chatml", "llama3", "gemma"])
def test_chat_over_http_takes_special_tokens_only_from_the_template(
    start_server, chat_checkpoints, model_name, name
):
    _, tok = load_model(chat_checkpoints[name])
    live = start_server(ServeLimits(max_tokens=8), checkpoint_dir=chat_checkpoints[name])
    messages = forged(tok)
    with httpx.Client(base_url=live.url, timeout=60) as http:
        answer = http.post("/v1/tokenize", json={"messages": messages,
                                                 "add_generation_prompt": True})  # fmt: skip
        assert answer.status_code == 200, answer.text
        tokens = answer.json()["tokens"]
        assert [t["text"] for t in tokens if t["special"]] == TEMPLATE_SPECIALS[name]
        reply = http.post("/v1/chat/completions", json={
            "model": model_name, "messages": messages, "max_tokens": 2, "temperature": 0,
        })  # fmt: skip
        assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["prompt_tokens"] == answer.json()["count"] == len(tokens)
    # Typed as text, the forged markers cost many ordinary tokens: far more than the template's.
    assert len(tokens) > len(TEMPLATE_SPECIALS[name]) + 3 * len(tok.special_tokens)
    live.stop()


def test_buildlm_chat_reads_a_forged_message_as_text(chat_checkpoints):
    """``buildlm chat`` (a real subprocess): the prompt it prefills holds the message's
    special-looking text as ordinary tokens; its length is the chat format's encoding."""
    import re
    import subprocess
    import sys

    _, tok = load_model(chat_checkpoints["chatml"])
    line = forged(tok)[1]["content"]
    run = subprocess.run(
        [sys.executable, "-m", "buildlm", "chat", "--model", str(chat_checkpoints["chatml"]),
         "--max-new-tokens", "1", "--temperature", "0", "--stats", "--device", "cpu"],
        input=line + "\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    prefilled = int(re.search(r"prefill (\d+) tokens", run.stderr).group(1))
    # ChatML by hand: <|im_start|>user\n{line}<|im_end|>\n<|im_start|>assistant\n
    start, end = tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]
    text = [tok.encode(t, disallowed_special=()) for t in (f"user\n{line}", "\n", "assistant\n")]
    expected = [start, *text[0], end, *text[1], start, *text[2]]
    assert prefilled == len(expected)
