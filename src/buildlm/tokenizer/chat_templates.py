"""Chat templates: a conversation as the exact text an instruction-tuned model was trained on.

A chat model does not see "messages"; it sees one string in which special tokens mark who speaks.
Each family has its own markup, and a prompt in the wrong markup makes a good model answer
badly. Hugging Face ships the markup as a Jinja template in ``tokenizer_config.json``; the same
formats are written here as plain functions.

A message is ``{"role": "system" | "user" | "assistant", "content": str}``. With
``add_generation_prompt=True`` the text ends with the header of an assistant turn, so the model's
continuation is the reply.

Each format is written once, as a list of *parts* (``*_parts``); the ``*_prompt`` functions join
them. A part that is a `Special` is markup the template wrote (``<|im_start|>``); every other
part is plain text, message contents included. Tokenizing the parts (`buildlm.infer.chat_format`)
turns only the template's `Special` parts into special tokens: a user who types
``<|im_start|>system`` gets those characters as ordinary text, not a forged turn.

Llama 3 (``<|eot_id|>`` ends a turn; content is stripped of surrounding whitespace)::

    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n

ChatML (Qwen; ``<|im_end|>`` ends a turn)::

    <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n

Gemma (``<end_of_turn>`` ends a turn; the assistant is called ``model``; turns must alternate
user, model, user, ...; a system message has no turn of its own and opens the first user turn,
as Gemma 3's template does; content is stripped of surrounding whitespace)::

    <bos><start_of_turn>user\\nBe brief.\\n\\nHi<end_of_turn>\\n<start_of_turn>model\\n

Mistral / Mixtral (Mistral-7B-Instruct-v0.3's template; ``</s>`` ends a reply; turns alternate
user, assistant, ...; a system message has no turn and opens the *last* user message, and is
dropped when the conversation does not end with a user message; no generation header: the
prompt ends with ``[/INST]``)::

    <s>[INST] Hi[/INST] Hello!</s>[INST] Be brief.\\n\\nAnd now?[/INST]

OLMo 2 Instruct (Tulu's format; ``<|endoftext|>`` is both the first token and the end of a
reply)::

    <|endoftext|><|system|>\\nBe brief.\\n<|user|>\\nHi\\n<|assistant|>\\n
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Message = Mapping[str, str]
ROLES = ("system", "user", "assistant")

LLAMA3_BOS = "<|begin_of_text|>"
LLAMA3_EOT = "<|eot_id|>"
CHATML_END = "<|im_end|>"
QWEN2_DEFAULT_SYSTEM = "You are a helpful assistant."
GEMMA_BOS = "<bos>"
GEMMA_END = "<end_of_turn>"
MISTRAL_BOS = "<s>"
MISTRAL_EOS = "</s>"
OLMO2_EOT = "<|endoftext|>"


def check_messages(messages: Sequence[Message]) -> None:
    """Raise ``ValueError`` naming the first message that is not ``{role, content}`` with a known role."""
    if isinstance(messages, (str, bytes)):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not messages:
        raise ValueError("a chat prompt needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be a dict with a string 'content', got {m!r}")
        if m.get("role") not in ROLES:
            raise ValueError(
                f"message {i} has role {m.get('role')!r}; choose one of: {', '.join(ROLES)}"
            )


class Special(str):
    """The text of a special token that a template wrote (never a message's content)."""


def llama3_parts(messages: Sequence[Message], add_generation_prompt: bool = False) -> list[str]:
    """`llama3_prompt` as parts: the template's special tokens as `Special`, the rest as text."""
    check_messages(messages)
    start, end = Special("<|start_header_id|>"), Special("<|end_header_id|>")
    parts: list[str] = [Special(LLAMA3_BOS)]
    for m in messages:
        parts += [start, m["role"], end, "\n\n", m["content"].strip(), Special(LLAMA3_EOT)]
    if add_generation_prompt:
        parts += [start, "assistant", end, "\n\n"]
    return parts


def llama3_prompt(messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """The Llama 3 (Instruct) chat format: a header per turn, ``<|eot_id|>`` after each."""
    return "".join(llama3_parts(messages, add_generation_prompt))


def chatml_parts(
    messages: Sequence[Message],
    add_generation_prompt: bool = False,
    default_system: str | None = None,
) -> list[str]:
    """`chatml_prompt` as parts: the template's special tokens as `Special`, the rest as text."""
    check_messages(messages)
    if default_system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}, *messages]
    start, end = Special("<|im_start|>"), Special(CHATML_END)
    parts: list[str] = []
    for m in messages:
        parts += [start, f"{m['role']}\n", m["content"], end, "\n"]
    if add_generation_prompt:
        parts += [start, "assistant\n"]
    return parts


def chatml_prompt(
    messages: Sequence[Message],
    add_generation_prompt: bool = False,
    default_system: str | None = None,
) -> str:
    """ChatML, the format of Qwen (and others): ``<|im_start|>role\\ncontent<|im_end|>\\n``.

    ``default_system`` is put first when the conversation does not start with a system message
    (Qwen2 does this with `QWEN2_DEFAULT_SYSTEM`).
    """
    return "".join(chatml_parts(messages, add_generation_prompt, default_system))


def qwen2_prompt(messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """Qwen2 Instruct: ChatML with a default system message.

    (Qwen2.5's default system message is longer; pass it to `chatml_prompt`.)
    """
    return chatml_prompt(messages, add_generation_prompt, default_system=QWEN2_DEFAULT_SYSTEM)


def gemma_parts(messages: Sequence[Message], add_generation_prompt: bool = False) -> list[str]:
    """`gemma_prompt` as parts: the template's special tokens as `Special`, the rest as text."""
    check_messages(messages)
    prefix = ""  # a system message becomes the start of the first user turn
    if messages[0]["role"] == "system":
        prefix, messages = messages[0]["content"] + "\n\n", messages[1:]
    start, end = Special("<start_of_turn>"), Special(GEMMA_END)
    parts: list[str] = [Special(GEMMA_BOS)]
    for i, m in enumerate(messages):
        if (m["role"] == "user") != (i % 2 == 0):
            raise ValueError(
                f"message {i} is a {m['role']!r} turn: Gemma's chat format needs turns that "
                "alternate user, assistant, user, ... (after at most one first system message)"
            )
        role = "model" if m["role"] == "assistant" else m["role"]
        parts += [start, f"{role}\n", prefix if i == 0 else "", m["content"].strip(), end, "\n"]
    if add_generation_prompt:
        parts += [start, "model\n"]
    return parts


def gemma_prompt(messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """The Gemma (Instruct) chat format: ``<start_of_turn>role\\ncontent<end_of_turn>\\n``."""
    return "".join(gemma_parts(messages, add_generation_prompt))


def _alternating(messages: Sequence[Message], family: str) -> None:
    """Raise unless ``messages`` alternate user, assistant, user, ... (one family's rule)."""
    for i, m in enumerate(messages):
        if (m["role"] == "user") != (i % 2 == 0) or m["role"] == "system":
            raise ValueError(
                f"message {i} is a {m['role']!r} turn: {family}'s chat format needs turns that "
                "alternate user, assistant, user, ... (after at most one first system message)"
            )


def mistral_parts(
    messages: Sequence[Message], add_generation_prompt: bool = False, control_tokens: bool = True
) -> list[str]:
    """`mistral_prompt` as parts. ``[INST]`` / ``[/INST]`` are `Special` when ``control_tokens``
    (they are special tokens of v0.3 tokenizers) and plain text otherwise (v0.1, Mixtral 8x7B).

    ``add_generation_prompt`` changes nothing: the prompt already ends with ``[/INST]``.
    """
    check_messages(messages)
    system = None
    if messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    _alternating(messages, "Mistral")
    inst, end_inst = ("[INST]", "[/INST]")
    if control_tokens:
        inst, end_inst = Special(inst), Special(end_inst)
    parts: list[str] = [Special(MISTRAL_BOS)]
    for i, m in enumerate(messages):
        if m["role"] == "user":
            last = i == len(messages) - 1
            content = f"{system}\n\n{m['content']}" if last and system is not None else m["content"]
            parts += [inst, " " + content, end_inst]
        else:
            parts += [" " + m["content"].strip(), Special(MISTRAL_EOS)]
    return parts


def mistral_prompt(messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """The Mistral / Mixtral (Instruct) chat format: ``[INST] user[/INST] reply</s>``."""
    return "".join(mistral_parts(messages, add_generation_prompt))


def olmo2_parts(
    messages: Sequence[Message], add_generation_prompt: bool = False, role_tokens: bool = False
) -> list[str]:
    """`olmo2_prompt` as parts: ``<|endoftext|>`` `Special`; the role tags ``<|user|>`` ... are
    plain text, or `Special` with ``role_tokens`` (a tokenizer that has them as special tokens).
    """
    check_messages(messages)
    eot = Special(OLMO2_EOT)

    def tag(role: str) -> str:
        return Special(f"<|{role}|>") if role_tokens else f"<|{role}|>"

    parts: list[str] = [eot]
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        if m["role"] == "assistant":
            parts += [tag("assistant"), "\n" + m["content"], eot, "" if last else "\n"]
        else:
            parts += [tag(m["role"]), "\n" + m["content"] + "\n"]
    if add_generation_prompt:
        parts += [tag("assistant"), "\n"]
    return parts


def olmo2_prompt(messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """The OLMo 2 (Instruct) chat format: ``<|user|>\\ncontent\\n``, replies end with
    ``<|endoftext|>``."""
    return "".join(olmo2_parts(messages, add_generation_prompt))
