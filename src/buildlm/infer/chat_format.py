"""Which chat format a model speaks, told from its tokenizer's special tokens.

Instruction-tuned Llama 3 models know ``<|eot_id|>``, Qwen models ``<|im_start|>``, Gemma models
``<start_of_turn>``, OLMo 2 models ``<|endofprompt|>`` and ``<|pad|>`` (and ``<|im_start|>``,
which they never use in chat), Mistral v0.3 models ``[INST]``, and the older SentencePiece
models (Mistral v0.1, Mixtral 8x7B, Llama 2) only ``<s>`` and ``</s>``: they get Mistral's
format, ``[INST]`` as plain text. The formats live in `buildlm.tokenizer.chat_templates`. A model
trained here from scratch has none of them, so it gets a plain transcript ("User: ...\\n
Assistant: ..."), which a base model can at least continue. The end-of-turn token is returned
too: generation stops there.

`ChatFormat.encode` is how a conversation becomes token ids, in ``buildlm chat`` and in the
server: only the special tokens the template writes become special ids; message contents are
always ordinary text, so a message cannot forge a turn or an end of text by typing
``<|im_start|>`` or ``<|endoftext|>``. (A raw prompt, as ``buildlm generate`` reads it, may
still name special tokens by their text: that is the user's own document, not a conversation.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from buildlm.tokenizer.chat_templates import (
    CHATML_END,
    GEMMA_END,
    LLAMA3_EOT,
    MISTRAL_BOS,
    MISTRAL_EOS,
    OLMO2_EOT,
    Message,
    Special,
    chatml_parts,
    chatml_prompt,
    gemma_parts,
    gemma_prompt,
    llama3_parts,
    llama3_prompt,
    mistral_parts,
    mistral_prompt,
    olmo2_parts,
    olmo2_prompt,
)


def plain_prompt(messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """A transcript with a line per turn, for models without a chat format of their own."""
    text = "".join(f"{m['role'].capitalize()}: {m['content'].strip()}\n" for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")


def plain_parts(messages: Sequence[Message], add_generation_prompt: bool = False) -> list[str]:
    """`plain_prompt` as parts: all plain text (the transcript has no special tokens)."""
    return [plain_prompt(messages, add_generation_prompt)]


@dataclass(frozen=True)
class ChatFormat:
    """How to render a conversation, and the text that ends a turn (a stop for generation).

    ``render`` gives the text (to show it); ``parts`` the same text split into the template's
    `Special` tokens and plain text, which `encode` tokenizes.
    """

    name: str
    render: Callable[..., str]
    end_of_turn: str | None
    stop_strings: tuple[str, ...] = ()
    parts: Callable[..., list[str]] = plain_parts

    def encode(
        self, tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = False
    ) -> list[int]:
        """The conversation's token ids: the template's specials as special ids, every other
        piece (message contents included) as ordinary text, special-looking or not.

        Plain text between two specials is encoded in one piece, so the ids equal those of the
        rendered text whenever no message contains special-token text.
        """
        ids: list[int] = []
        text = ""
        after_special = False
        for part in self.parts(messages, add_generation_prompt):
            if isinstance(part, Special):
                ids += _encode_plain(tokenizer, text, after_special) if text else []
                ids.append(tokenizer.special_tokens[part])
                text, after_special = "", True
            else:
                text += part
        return ids + (_encode_plain(tokenizer, text, after_special) if text else [])


def _encode_plain(tokenizer: Any, text: str, after_special: bool) -> list[int]:
    """Ids of plain text; after a special token, a SentencePiece-style tokenizer must not mark
    the start of a text again (`SentencePieceBPE.encode_continuation`), as Hugging Face does not
    when it encodes the rendered conversation."""
    continuation = getattr(tokenizer, "encode_continuation", None)
    if after_special and continuation is not None:
        return continuation(text)
    return tokenizer.encode(text, disallowed_special=())


def chat_format_for(tokenizer) -> ChatFormat:
    """The chat format matching ``tokenizer``'s special tokens."""
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    if LLAMA3_EOT in specials:
        return ChatFormat("llama3", llama3_prompt, LLAMA3_EOT, parts=llama3_parts)
    if OLMO2_EOT in specials and "<|endofprompt|>" in specials and "<|pad|>" in specials:
        role_tokens = all(f"<|{r}|>" in specials for r in ("system", "user", "assistant"))
        parts = partial(olmo2_parts, role_tokens=role_tokens)
        return ChatFormat("olmo2", olmo2_prompt, OLMO2_EOT, parts=parts)
    if "<|im_start|>" in specials and CHATML_END in specials:
        return ChatFormat("chatml", chatml_prompt, CHATML_END, parts=chatml_parts)
    if "<start_of_turn>" in specials and GEMMA_END in specials:
        return ChatFormat("gemma", gemma_prompt, GEMMA_END, parts=gemma_parts)
    if MISTRAL_BOS in specials and MISTRAL_EOS in specials:
        control = "[INST]" in specials and "[/INST]" in specials
        parts = partial(mistral_parts, control_tokens=control)
        return ChatFormat("mistral", mistral_prompt, MISTRAL_EOS, parts=parts)
    return ChatFormat("plain", plain_prompt, None, stop_strings=("\nUser:",), parts=plain_parts)
