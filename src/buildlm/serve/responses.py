"""The JSON objects the server answers with, in OpenAI's shapes.

Two endpoints, each in two forms:

- ``/v1/chat/completions``: a ``chat.completion`` object, or, streamed, a series of
  ``chat.completion.chunk`` objects whose ``choices[i].delta`` carries the new text
  (the first chunk of a choice says ``"role": "assistant"``, its last one has a
  ``finish_reason`` and an empty delta).
- ``/v1/completions``: a ``text_completion`` object; streamed, the same object type per chunk
  with ``choices[i].text`` the new text.

Streams use server-sent events: each chunk is a line ``data: {json}`` followed by a blank
line, and the stream ends with ``data: [DONE]``. ``stream_options.include_usage`` adds one last
chunk with empty ``choices`` and the token counts, as OpenAI does.

``extra`` fields (buildlm's extensions, such as ``dropped_messages`` when a chat request asked
for ``trim_history``) go into the whole answer and into the first chunk of a stream.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


def new_id(prefix: str) -> str:
    """A unique id like OpenAI's (``chatcmpl-...``, ``cmpl-...``)."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON (or the literal ``[DONE]``)."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class ResponseBuilder:
    """Builds the objects of one response; ``chat`` picks the chat or the completions shapes."""

    def __init__(self, model: str, chat: bool, extra: dict[str, Any] | None = None) -> None:
        self.model = model
        self.chat = chat
        self.extra = dict(extra or {})
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id, "object": obj, "created": self.created, "model": self.model,
            "system_fingerprint": None, "choices": choices, **extra,
        }  # fmt: skip

    # --- whole responses ---

    def full(self, texts: list[str], reasons: list[str], prompt_tokens: int,
             completion_tokens: int) -> dict[str, Any]:  # fmt: skip
        """The non-streamed answer with every choice."""
        if self.chat:
            choices = [
                {"index": i, "message": {"role": "assistant", "content": text},
                 "logprobs": None, "finish_reason": reason}
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ]  # fmt: skip
            obj = "chat.completion"
        else:
            choices = [
                {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ]
            obj = "text_completion"
        return self._envelope(
            obj, choices, usage=usage(prompt_tokens, completion_tokens), **self.extra
        )

    # --- stream chunks ---

    def role_chunk(self, n: int) -> dict[str, Any] | None:
        """The opening chunk of a chat stream: every choice's role, and the ``extra`` fields
        (none for completions)."""
        if not self.chat:
            return None
        choices = [
            {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
             "finish_reason": None}
            for i in range(n)
        ]  # fmt: skip
        return self._envelope("chat.completion.chunk", choices, **self.extra)

    def chunk(self, index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        """New text of one choice; with ``finish_reason`` set, that choice's last chunk."""
        if self.chat:
            delta = {"content": text} if text else {}
            choice = {
                "index": index,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            return self._envelope("chat.completion.chunk", [choice])
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The last chunk when ``stream_options.include_usage``: no choices, the counts."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._envelope(obj, [], usage=usage(prompt_tokens, completion_tokens))
