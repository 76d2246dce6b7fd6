"""The request bodies the server accepts, as pydantic models (OpenAI's field names and types).

Pydantic checks every field's type and range as the JSON is parsed, so by the time a handler
runs, ``max_tokens`` is a positive int and ``temperature`` a finite non-negative number; a
request that breaks a rule gets a 400 naming the field (`buildlm.serve.errors`).

The models are *strict*: ``"max_tokens": "5"`` or ``"stream": 1`` are errors, not guesses, so a
client's bug shows up at once. Unknown fields are ignored, as OpenAI-compatible servers do, so
clients that send ``user`` or ``logprobs: false`` keep working. Limits that the server's flags
set (the largest ``max_tokens``, ``n`` ...) are checked later, in `buildlm.serve.prompts`.

Beyond OpenAI's fields, buildlm accepts ``top_k``, ``min_p``, ``repetition_penalty`` and
``ignore_eos`` (generate exactly ``max_tokens`` tokens: handy for benchmarks), and, for chat,
``trim_history`` (drop the oldest turns that do not fit the context instead of answering 400;
`buildlm.serve.prompts`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Absent or null, a request samples at temperature 1.0, the model's own distribution, as
# OpenAI's API does; buildlm's chat page and CLI start lower (infer.sampling.DEFAULT_TEMPERATURE).
API_DEFAULT_TEMPERATURE = 1.0
# torch.Generator.manual_seed takes a signed or unsigned 64-bit integer.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
StopStrings = Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=16)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class StreamOptions(_Strict):
    """``{"include_usage": true}`` adds a last chunk with the token counts."""

    include_usage: bool = False


class _GenerationRequest(_Strict):
    """The sampling fields shared by ``/v1/chat/completions`` and ``/v1/completions``."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(
        None, ge=0, description=f"0: greedy; absent or null: {API_DEFAULT_TEMPERATURE}, as OpenAI"
    )
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, description="-1 or 0: no top-k (buildlm extra)")
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, ge=0.01, le=100)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int = Field(1, ge=1)
    stop: Annotated[str, Field(min_length=1)] | StopStrings | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class TextPart(_Strict):
    """One part of a message's content given as a list (only text parts are understood)."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """One turn; ``developer`` is OpenAI's newer name for ``system``."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_dict(self) -> dict[str, str]:
        """The ``{"role", "content"}`` dict the chat formats render."""
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


Messages = Annotated[list[ChatMessage], Field(min_length=1)]


class ChatCompletionRequest(_GenerationRequest):
    """``POST /v1/chat/completions``: a conversation to reply to."""

    messages: Messages
    max_completion_tokens: int | None = Field(None, ge=1)
    trim_history: bool = Field(
        False,
        description="buildlm extra: leave out the oldest turns that do not fit the context "
        "(and cap max_tokens at the room left) instead of answering context_length_exceeded",
    )


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
PromptTexts = Annotated[list[str], Field(min_length=1)]
PromptIdLists = Annotated[list[TokenIds], Field(min_length=1)]


class CompletionRequest(_GenerationRequest):
    """``POST /v1/completions``: text (or token ids) to continue; one prompt or a list."""

    prompt: str | PromptTexts | TokenIds | PromptIdLists
    echo: bool = False

    def prompt_list(self) -> list[str] | list[list[int]]:
        """The prompts as a list, each a string or a list of ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if isinstance(p[0], int):
            return [p]  # one prompt given as ids
        return list(p)


class InspectRequest(_Strict):
    """``POST /v1/tokenize``: ``text`` or ``messages`` (rendered with the chat format)."""

    model: str | None = None
    text: str | None = None
    messages: Messages | None = None
    add_generation_prompt: bool = False


class AttentionRequest(InspectRequest):
    """``POST /v1/attention``: the weights one head of one layer puts on the tokens."""

    layer: int = Field(0, ge=0)
    head: int = Field(0, ge=0)
