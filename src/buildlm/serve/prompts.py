"""From a validated request to the engine's work: token ids and `SamplingParams` per choice.

Everything the server's limits forbid is caught here, before any model work, with a 400 that
names the field: a prompt longer than ``--max-prompt-tokens`` or the model's context,
``max_tokens`` above ``--max-tokens``, ``n`` above ``--max-n``, a temperature above the cap.

A chat request is rendered exactly as ``buildlm chat`` renders it (`chat_format_for` on the
tokenizer): the conversation becomes one prompt string ending with the assistant's header, and
generation stops at the format's end-of-turn token (and, for the plain transcript format, at
``"\\nUser:"``, where a base model would start writing the user's next line).

A conversation longer than the context gets OpenAI's answer, a 400 with ``code:
"context_length_exceeded"``, unless the request sets ``"trim_history": true`` (a buildlm
extension, what the chat page sends): then the oldest whole turns are left out until the prompt
leaves room for a reply (`buildlm.infer.conversation.fit_conversation`, the rule ``buildlm
chat`` uses: the system messages and the newest user message stay), ``max_tokens`` is capped at
the room the prompt leaves, and the response says how many messages were left out
(``dropped_messages``; see `buildlm.serve.app`).

With ``n > 1`` and a ``seed``, choice ``i`` samples with ``seed + i``: the same seed for every
choice would give ``n`` identical answers. Choice 0 uses the seed itself, so ``n=1`` requests
match ``Engine.generate(..., seed=seed)`` exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from buildlm.infer.chat_format import ChatFormat
from buildlm.infer.conversation import ConversationTooLong, fit_conversation
from buildlm.infer.processors import MIN_TEMPERATURE
from buildlm.infer.requests import SamplingParams
from buildlm.serve.errors import APIError
from buildlm.serve.limits import ServeLimits
from buildlm.serve.schemas import (
    API_DEFAULT_TEMPERATURE,
    SEED_MAX,
    SEED_MIN,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    _GenerationRequest,
)


@dataclass
class Work:
    """What the scheduler runs for one request: one row per choice, and the usage count."""

    prompts: list[list[int]]  # one id list per row (prompt-major: prompt 0's n choices first)
    params: list[SamplingParams]
    prompt_tokens: int
    dropped_messages: int | None = None  # with ``trim_history``: messages left out to fit


def encode(tokenizer: Any, text: str) -> list[int]:
    """A completion prompt's text -> ids; special-token text (``<|endoftext|>``) is read as the
    special token, as ``buildlm generate`` reads prompts. Never used for chat messages."""
    return tokenizer.encode(text, allowed_special="all")


def encode_chat(tokenizer: Any, fmt: ChatFormat, messages: list[ChatMessage],
                add_generation_prompt: bool) -> list[int]:  # fmt: skip
    """The conversation's ids (`ChatFormat.encode`): special tokens come only from the
    template, so a message that types ``<|im_start|>`` or ``<|endoftext|>`` forges nothing."""
    try:
        return fmt.encode(
            tokenizer, [m.as_dict() for m in messages], add_generation_prompt=add_generation_prompt
        )
    except ValueError as err:
        raise APIError(400, str(err), param="messages") from None


def check_prompt(ids: list[int], limits: ServeLimits, context_length: int, vocab_size: int,
                 param: str) -> None:  # fmt: skip
    """A prompt must be non-empty, fit the limit and the context, and use known ids."""
    if not ids:
        raise APIError(400, "the prompt is empty; give at least one token", param=param)
    limit = limits.prompt_limit(context_length)
    if len(ids) > limit:
        why = "the model's context length" if limit == context_length else "--max-prompt-tokens"
        raise APIError(
            400,
            f"the prompt has {len(ids)} tokens, more than the {limit} allowed ({why}); shorten it",
            param=param,
            code="context_length_exceeded",
        )
    bad = next((i for i in ids if i >= vocab_size), None)
    if bad is not None:
        raise APIError(400, f"token id {bad} is not in the vocabulary (0..{vocab_size - 1})", param)


def sampling_params_from_request(
    req: _GenerationRequest,
    limits: ServeLimits,
    stop: list[str],
    stop_token_ids: tuple[int, ...] | None,
    default_max_tokens: int | None = None,
) -> list[SamplingParams]:
    """One `SamplingParams` per choice (``n``), after checking the server's limits."""
    max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
    param = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
    if max_tokens is None:
        max_tokens = min(default_max_tokens or limits.default_max_tokens, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise APIError(
            400, f"{param}={max_tokens} is more than this server allows ({limits.max_tokens})",
            param=param,
        )  # fmt: skip
    if req.n > limits.max_n:
        raise APIError(400, f"n={req.n} is more than this server allows ({limits.max_n})", "n")
    temperature = API_DEFAULT_TEMPERATURE if req.temperature is None else req.temperature
    if temperature > limits.max_temperature:
        raise APIError(
            400, f"temperature={temperature} is above the maximum {limits.max_temperature}",
            param="temperature",
        )  # fmt: skip
    if temperature < MIN_TEMPERATURE:  # 1/temperature would overflow the logits to inf
        temperature = 0.0
    top_k = req.top_k if req.top_k is not None and req.top_k > 0 else None
    if req.ignore_eos:
        stop_token_ids = ()
    out = []
    for i in range(req.n):
        seed = None
        if req.seed is not None:  # choice i samples with seed + i (wrapped into int64)
            seed = (req.seed + i - SEED_MIN) % (SEED_MAX - SEED_MIN + 1) + SEED_MIN
        try:
            out.append(
                SamplingParams(
                    max_new_tokens=max_tokens,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=req.top_p,
                    min_p=req.min_p,
                    repetition_penalty=req.repetition_penalty,
                    frequency_penalty=req.frequency_penalty or 0.0,
                    presence_penalty=req.presence_penalty or 0.0,
                    stop=tuple(stop),
                    stop_token_ids=stop_token_ids,
                    seed=seed,
                )  # fmt: skip
            )
        except ValueError as err:
            raise APIError(400, str(err)) from None
    return out


def chat_work(
    req: ChatCompletionRequest, tokenizer: Any, fmt: ChatFormat, limits: ServeLimits,
    context_length: int, vocab_size: int,
) -> Work:  # fmt: skip
    """Render the conversation, tokenize it, and one row per choice."""
    stop_ids: tuple[int, ...] | None = None  # the tokenizer's end-of-text
    if fmt.end_of_turn is not None:
        stop_ids = (tokenizer.special_tokens[fmt.end_of_turn],)
    stop = list(fmt.stop_strings) + req.stop_list
    if req.trim_history:
        params = sampling_params_from_request(req, limits, stop, stop_ids)
        return trimmed_chat_work(req, tokenizer, fmt, limits, context_length, vocab_size, params)
    ids = encode_chat(tokenizer, fmt, req.messages, add_generation_prompt=True)
    check_prompt(ids, limits, context_length, vocab_size, "messages")
    params = sampling_params_from_request(req, limits, stop, stop_ids)
    return Work([ids] * req.n, params, len(ids))


def trimmed_chat_work(
    req: ChatCompletionRequest, tokenizer: Any, fmt: ChatFormat, limits: ServeLimits,
    context_length: int, vocab_size: int, params: list[SamplingParams],
) -> Work:  # fmt: skip
    """``trim_history``: the oldest turns that do not fit are left out, ``max_tokens`` capped."""

    def tokenize(messages: list[dict[str, str]]) -> list[int]:
        try:  # special tokens only from the template, as in `encode_chat`
            return fmt.encode(tokenizer, messages, add_generation_prompt=True)
        except ValueError as err:
            raise APIError(400, str(err), param="messages") from None

    try:
        fitted = fit_conversation(
            [m.as_dict() for m in req.messages], tokenize, context_length,
            params[0].max_new_tokens, max_prompt_tokens=limits.max_prompt_tokens,
        )  # fmt: skip
    except ConversationTooLong as err:
        raise APIError(400, str(err), param="messages", code="context_length_exceeded") from None
    ids = fitted.prompt_ids
    check_prompt(ids, limits, context_length, vocab_size, "messages")
    params = [dataclasses.replace(p, max_new_tokens=fitted.max_new_tokens) for p in params]
    return Work([ids] * req.n, params, len(ids), fitted.dropped_messages)


def completion_work(
    req: CompletionRequest, tokenizer: Any, limits: ServeLimits, context_length: int,
    vocab_size: int,
) -> Work:  # fmt: skip
    """Tokenize each prompt (or take its ids); ``n`` rows per prompt."""
    if req.echo:
        raise APIError(400, "echo is not supported by this server", param="echo")
    # OpenAI's default for the legacy completions endpoint is 16 new tokens.
    params = sampling_params_from_request(req, limits, req.stop_list, None, default_max_tokens=16)
    prompts = req.prompt_list()
    if len(prompts) * req.n > limits.max_batch_size:
        raise APIError(
            400, f"{len(prompts)} prompts x n={req.n} is more than the {limits.max_batch_size} "
            "choices one request may ask for", param="prompt",
        )  # fmt: skip
    rows, total = [], 0
    for prompt in prompts:
        ids = encode(tokenizer, prompt) if isinstance(prompt, str) else list(prompt)
        check_prompt(ids, limits, context_length, vocab_size, "prompt")
        rows += [ids] * req.n
        total += len(ids)
    return Work(rows, params * len(prompts), total)
