"""Which chat format a model speaks, told from its tokenizer's special tokens.

Instruction-tuned Llama 3 models know ``<|eot_id|>``, Qwen models ``<|im_start|>``; their chat
formats live in `buildlm.hub.chat_templates`. A model trained here from scratch has neither, so
it gets a plain transcript ("User: ...\\nAssistant: ..."), which a base model can at least
continue. The end-of-turn token is returned too: generation stops there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from buildlm.hub.chat_templates import CHATML_END, LLAMA3_EOT, Message, chatml_prompt, llama3_prompt


def plain_prompt(messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """A transcript with a line per turn, for models without a chat format of their own."""
    text = "".join(f"{m['role'].capitalize()}: {m['content'].strip()}\n" for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")


@dataclass(frozen=True)
class ChatFormat:
    """How to render a conversation, and the text that ends a turn (a stop for generation)."""

    name: str
    render: Callable[..., str]
    end_of_turn: str | None
    stop_strings: tuple[str, ...] = ()


def chat_format_for(tokenizer) -> ChatFormat:
    """The chat format matching ``tokenizer``'s special tokens."""
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    if LLAMA3_EOT in specials:
        return ChatFormat("llama3", llama3_prompt, LLAMA3_EOT)
    if "<|im_start|>" in specials and CHATML_END in specials:
        return ChatFormat("chatml", chatml_prompt, CHATML_END)
    return ChatFormat("plain", plain_prompt, None, stop_strings=("\nUser:",))
