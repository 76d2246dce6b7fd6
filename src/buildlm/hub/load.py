"""Load a Hugging Face model folder (GPT-2, Llama, Qwen2, Qwen3) into a buildlm `GPT`.

The loader never holds the weights twice:

1. ``config.json`` becomes a `ModelConfig` (`hf_config.config_from_hf`).
2. The `GPT` is built on the *meta* device: every parameter has a shape and a dtype but no
   memory, so nothing is allocated or randomly initialised only to be overwritten.
3. A tensor used as stored becomes a view into a memory map of the file (read lazily, never
   copied). A tensor whose layout changes (GPT-2's transposed weights, Llama's q/k/v fused
   into ``attn.qkv``) is allocated once, in its final dtype, and the checkpoint's bytes are read
   straight into it (`safetensors_io`): q, k and v go into their rows of the fused matrix.
4. ``load_state_dict(assign=True)`` makes those tensors the model's parameters (no copy).
5. The buffers that are functions of the config (RoPE's cos/sin tables) are computed, since a
   meta model has none.

Peak memory is one copy of the weights plus one tensor of scratch (measured by
``benchmarks/load.py``). Every problem is found before reading any data: a missing tensor, a
tensor the model has no place for, or a wrong shape raises ``ValueError`` naming it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from buildlm.hub.hf_config import config_from_hf, model_type_of, parse_hf_dtype, read_hf_config
from buildlm.hub.hf_weights import Link, canonical_name, is_ignored, weight_links
from buildlm.hub.weight_files import TensorFile, open_weights
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import SentencePieceBPE, Tokenizer
from buildlm.tokenizer.files import read_json


def load_hf(
    path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str = "cpu",
    tokenizer: bool = True,
) -> tuple[GPT, Tokenizer | SentencePieceBPE | None]:
    """A Hugging Face model folder as ``(model, tokenizer)``; the model is in eval mode.

    ``dtype`` converts the weights (``torch.bfloat16``, ``"bf16"`` or ``"bfloat16"``); by default each
    tensor keeps the checkpoint's dtype, so a bf16 checkpoint stays bf16. The tokenizer comes from
    ``tokenizer.json`` (byte-level BPE, or SentencePiece-style with byte fallback) or GPT-2's
    ``vocab.json`` + ``merges.txt``; it is ``None``
    when the folder has neither, or when ``tokenizer=False``.
    """
    folder = Path(path)
    hf = read_hf_config(folder)
    model_type = model_type_of(hf)
    config = config_from_hf(hf)
    dtype = parse_hf_dtype(dtype)
    tok = load_hf_tokenizer(folder) if tokenizer else None
    if tok is not None and tok.vocab_size > config.vocab_size:
        raise ValueError(
            f"{str(folder)!r}: the tokenizer has {tok.vocab_size} ids but the model only "
            f"{config.vocab_size} embeddings; the folder mixes files of different models"
        )
    files = open_weights(folder)
    with torch.device("meta"), _skip_init():
        model = GPT(config)
    state = _read_state(folder, model_type, config, model, files, dtype, torch.device(device))
    model.load_state_dict(state, strict=True, assign=True)
    model.reset_buffers(device)
    return model.eval(), tok


@contextmanager
def _skip_init() -> Iterator[None]:
    """Make ``torch.nn.init``'s functions no-ops while the meta model is built.

    Initialising a meta tensor computes nothing anyway, but PyTorch's meta version of
    ``normal_`` imports its compiler stack on first use (1.5 s and 70 MB in a fresh process).
    transformers skips initialisation the same way when it loads a checkpoint.
    """
    names = ["normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "trunc_normal_"]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def load_hf_tokenizer(folder: str | os.PathLike) -> Tokenizer | SentencePieceBPE | None:
    """The tokenizer of a Hugging Face model folder, or ``None`` if it has no tokenizer files.

    A SentencePiece-style tokenizer.json (Llama 2, Mistral, Gemma) takes its beginning- and
    end-of-sequence tokens from ``tokenizer_config.json`` when the folder has one.
    """
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        path = folder / "tokenizer.json"
        try:
            data = read_json(path)
            tokenizer = Tokenizer.from_hf(path, data)
        except ValueError as err:
            raise ValueError(
                f"{err} (pass tokenizer=False to load the weights without the tokenizer)"
            ) from None
        if isinstance(tokenizer, SentencePieceBPE):
            _bos_eos_from_config(folder, tokenizer)
        for caveat in _tokenizer_caveats(data, isinstance(tokenizer, SentencePieceBPE)):
            warnings.warn(f"{path}: {caveat}", stacklevel=3)
        return tokenizer
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        # GPT-2's encoder.json + vocab.bpe under the names Hugging Face gives them.
        return Tokenizer.from_gpt2(folder / "vocab.json", folder / "merges.txt")
    return None


def _bos_eos_from_config(folder: Path, tokenizer: SentencePieceBPE) -> None:
    """Set ``tokenizer.bos`` / ``.eos`` from tokenizer_config.json's ``bos_token`` /
    ``eos_token`` (a string, or ``{"content": ...}``) where they name special tokens."""
    path = folder / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    for key, attr in (("bos_token", "bos"), ("eos_token", "eos")):
        value = config.get(key) if isinstance(config, dict) else None
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value in tokenizer.special_tokens:
            setattr(tokenizer, attr, value)


def _tokenizer_caveats(data: dict, normalizes: bool = False) -> list[str]:
    """What a tokenizer.json does that buildlm's tokenizer does not (said once, at load time).

    Qwen's tokenizers NFC-normalise text first (a byte-level `Tokenizer` does not; a
    `SentencePieceBPE`, ``normalizes``, does); Llama 3's and Gemma's add ``<|begin_of_text|>`` /
    ``<bos>`` to every encoded text in a post-processor. buildlm's encode does not.
    """
    caveats = []
    normalizer = data.get("normalizer")
    if normalizer and not normalizes:
        caveats.append(
            f"the tokenizer normalizes text first ({normalizer.get('type')}) and buildlm's does "
            "not: normalize text yourself if it may not be in that form already"
        )
    steps = data.get("post_processor") or {}
    steps = steps.get("processors", [steps]) if steps.get("type") == "Sequence" else [steps]
    for step in steps:
        if step.get("type") == "TemplateProcessing":
            added = [p["SpecialToken"]["id"] for p in step.get("single", []) if "SpecialToken" in p]
            if added:
                caveats.append(
                    f"the tokenizer adds {added} to every encoded text and buildlm's does not: "
                    "add them yourself (the chat templates in buildlm.hub do)"
                )
    return caveats


def _match_names(
    folder: Path, model_type: str, config: ModelConfig, links: list[Link], files: dict
) -> dict[str, str]:
    """Map each needed Hugging Face name to the name it has in this checkpoint, or raise."""
    present = {canonical_name(model_type, n): n for n in files}
    needed = {name: link.ours for link in links for name in link.theirs}
    missing = [n for n in needed if n not in present]
    if missing:
        raise ValueError(
            f"{str(folder)!r}: missing tensor {missing[0]!r} (for buildlm's "
            f"{needed[missing[0]]!r}){f' and {len(missing) - 1} more' if len(missing) > 1 else ''}"
            "; the weights do not match config.json"
        )
    unexpected = sorted(
        n for c, n in present.items() if c not in needed and not is_ignored(model_type, c, config)
    )
    if unexpected:
        raise ValueError(
            f"{str(folder)!r}: unexpected tensor {unexpected[0]!r}"
            f"{f' and {len(unexpected) - 1} more' if len(unexpected) > 1 else ''}: config.json "
            "describes no place for it (a different architecture or a damaged config?)"
        )
    return {n: present[n] for n in needed}


def _read_state(
    folder: Path,
    model_type: str,
    config: ModelConfig,
    model: GPT,
    files: dict[str, TensorFile],
    dtype: torch.dtype | None,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Every buildlm tensor of ``model``, read from ``files`` (checked first, then read)."""
    links = weight_links(model_type, config)
    names = _match_names(folder, model_type, config, links, files)
    targets = {k: v.shape for k, v in model.state_dict().items()}
    for link in links:  # shapes first, so nothing is read from a checkpoint that cannot fit
        for name, want in zip(link.theirs, link.their_shapes(targets[link.ours]), strict=True):
            got = files[names[name]].shape(names[name])
            if tuple(got) != tuple(want):
                raise ValueError(
                    f"{str(folder)!r}: tensor {names[name]!r} has shape {list(got)}, but "
                    f"config.json implies {list(want)}"
                )
    state = {}
    for link in links:
        first = names[link.theirs[0]]
        stored = files[first].dtype(first)
        if len(link.theirs) == 1 and not (link.transpose or link.stack) and dtype in (None, stored):
            view = files[first].mapped(first)  # used as stored: no copy at all
            if view is not None:
                state[link.ours] = view.to(device)
                continue
        out = torch.empty(targets[link.ours], dtype=dtype or stored)
        if link.transpose:
            scratch = torch.empty(tuple(reversed(out.shape)), dtype=out.dtype)
            files[first].read_into(first, scratch)
            out.copy_(scratch.t())
            del scratch
        elif link.stack:  # one expert per name: out[i] is theirs[i]
            for i, name in enumerate(link.theirs):
                files[names[name]].read_into(names[name], out[i])
        else:
            row = 0
            for name in link.theirs:  # several names: consecutive row blocks of ``out``
                source = names[name]
                n = files[source].shape(source)[0] if len(link.theirs) > 1 else out.shape[0]
                files[source].read_into(source, out[row : row + n])
                row += n
        state[link.ours] = out.to(device)
    return state
