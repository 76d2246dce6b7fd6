"""`buildlm.load`: one call from a name or a folder to a model you can talk to.

(The module is ``loader``, not ``load``: a submodule named ``load`` would replace the function
``buildlm.load`` by itself as soon as anything imported it.)

``buildlm.load("shakespeare-small")`` opens the small model shipped inside the package
(`buildlm/pretrained/`, trained on the bundled Shakespeare, so a learner has a real trained
model without training or downloading one). Any other argument is a folder that
`buildlm.infer.load.load_model` opens: a checkpoint, a training run (its newest checkpoint) or a
Hugging Face model folder.

The result, a `Loaded`, holds ``.model`` and ``.tokenizer`` and speaks through an
`buildlm.infer.Engine` (cached decoding, the same tokens as the readable
`buildlm.infer.generate` loop): ``.generate(prompt)`` returns the completion's text,
``.stream(prompt)`` yields it piece by piece, ``.chat(messages)`` renders a conversation in the
model's chat format and returns the reply.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

PRETRAINED = Path(__file__).resolve().parent / "pretrained"


def pretrained_names() -> list[str]:
    """The names of the models shipped with the package (folders under `buildlm/pretrained/`)."""
    if not PRETRAINED.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED.iterdir() if (p / "config.json").is_file())


def pretrained_path(name: str) -> Path:
    """The folder of the shipped model ``name``; a one-line error naming the choices if unknown."""
    folder = PRETRAINED / name
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{name!r} is neither a folder nor a shipped model; shipped: "
            f"{', '.join(pretrained_names()) or 'none'}"
        )
    return folder


@dataclass
class Loaded:
    """A model with its tokenizer, ready to write: ``.generate``, ``.stream``, ``.chat``.

    Keyword arguments of the three methods are `buildlm.infer.requests.SamplingParams` fields
    (``max_new_tokens``, ``temperature`` (0: greedy), ``top_k``, ``top_p``, ``seed``, ``stop``...).
    """

    model: nn.Module
    tokenizer: Any
    path: Path
    engine: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from buildlm.infer.engine import Engine

        # arrange_weights re-lays the weights out for fast decoding; a learner may want to read
        # or copy them exactly as stored, so the convenience object leaves them alone.
        self.engine = Engine(self.model, self.tokenizer, arrange_weights=False)

    def generate(self, prompt: str, **sampling: Any) -> str:
        """The text that follows ``prompt`` (without the prompt)."""
        sampling.setdefault("stop_token_ids", ())
        return self.engine.generate([prompt], **sampling)[0].text

    def stream(self, prompt: str, **sampling: Any) -> Iterator[str]:
        """Yield the continuation of ``prompt`` piece by piece, as it is decoded."""
        sampling.setdefault("stop_token_ids", ())
        yield from self.engine.stream(prompt, **sampling)

    def chat(self, messages: Sequence[dict[str, str]], **sampling: Any) -> str:
        """The assistant's reply to ``messages`` (``[{"role": "user", "content": "..."}]``).

        The conversation is rendered in the model's chat format and tokenized with special
        tokens only where the template puts them (a message that contains ``<|im_start|>``
        stays plain text). A conversation longer than the context loses its oldest whole turns
        and the reply is capped at what the context leaves, as in ``buildlm chat``.
        """
        from buildlm.infer.chat_format import chat_format_for
        from buildlm.infer.conversation import fit_conversation
        from buildlm.infer.requests import SamplingParams

        fmt = chat_format_for(self.tokenizer)
        fitted = fit_conversation(
            list(messages),
            lambda kept: fmt.encode(self.tokenizer, kept, add_generation_prompt=True),
            self.engine.context_length,
            sampling.pop("max_new_tokens", SamplingParams().max_new_tokens),
        )
        stops = list(sampling.pop("stop", ())) + list(fmt.stop_strings)
        if fmt.end_of_turn is not None:
            stops.append(fmt.end_of_turn)
        completion = self.engine.generate(
            [fitted.prompt_ids], stop=stops, max_new_tokens=fitted.max_new_tokens, **sampling
        )[0]
        return completion.text.strip()


def load(
    path_or_name: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
) -> Loaded:
    """Open a shipped model by name, or a checkpoint / run / Hugging Face folder, in eval mode.

    ``device`` and ``dtype`` take what the commands' ``--device`` and ``--dtype`` take
    (``"auto"``, ``"cpu"``, ``"cuda"``...; ``"fp32"``, ``"bf16"``, ``"fp16"``) or torch's own
    objects. ``dtype`` converts the floating-point weights (``None`` or ``"auto"`` keeps the
    stored ones; the shipped models are stored in float32).
    """
    from buildlm.device import parse_dtype, resolve_device
    from buildlm.infer.load import load_model

    if isinstance(device, str):
        device = resolve_device(device, flag="device")
    if dtype is None or isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    folder = Path(path_or_name)
    if not folder.exists() and folder.name == str(path_or_name):
        folder = pretrained_path(str(path_or_name))
    model, tokenizer = load_model(folder, device=device, dtype=dtype)
    return Loaded(model=model, tokenizer=tokenizer, path=folder)
