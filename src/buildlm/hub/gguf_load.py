"""Load a GGUF file (f32, f16, bf16 or q8_0 tensors) as a buildlm `GPT` and `Tokenizer`.

The way back from `gguf_save`, so that a model you only have as a ``.gguf`` can be run,
inspected or fine-tuned with buildlm. The file is read with the ``gguf`` package's
``GGUFReader`` (memory-mapped: a tensor is read when it is converted); the metadata becomes a
Hugging Face config (`gguf_config`) and then a `ModelConfig` (`hf_config.config_from_hf`); each
tensor is turned back into float32 (q8_0 blocks multiplied out by their scales), into the
Hugging Face layout (`gguf_tensors.from_gguf_layout`) and then into buildlm's
(`hf_weights.hf_to_buildlm`). The weights come back as float32 unless ``dtype`` is given: a
quantized file's values are exactly its dequantized numbers, nothing is invented.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from buildlm.hub.gguf_config import MODEL_TYPE, hf_config_from_gguf
from buildlm.hub.gguf_families import OWN_HEAD, rope_scaling_from_gguf
from buildlm.hub.gguf_tensors import decode, experts_name, from_gguf_layout, gguf_name
from buildlm.hub.gguf_tokenizer import tokenizer_from_fields
from buildlm.hub.hf_config import config_from_hf, parse_hf_dtype
from buildlm.hub.hf_weights import hf_to_buildlm, weight_links
from buildlm.model import GPT
from buildlm.tokenizer import SentencePieceBPE, Tokenizer


def read_metadata(reader: gguf.GGUFReader) -> dict[str, Any]:
    """Every key/value of a GGUF file as plain Python values (strings, numbers, lists)."""
    return {name: field.contents() for name, field in reader.fields.items() if field.types}


def open_gguf(path: str | os.PathLike) -> gguf.GGUFReader:
    """A reader for ``path``, with a one-line error for a missing or malformed file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"GGUF file {str(path)!r} not found")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as err:
        raise ValueError(f"{str(path)!r} is not a readable GGUF file ({err})") from None


def load_gguf(
    path: str | os.PathLike, dtype: torch.dtype | str | None = None
) -> tuple[GPT, Tokenizer | SentencePieceBPE]:
    """``(model, tokenizer)`` from the GGUF file ``path`` (an architecture in `MODEL_TYPE`)."""
    reader = open_gguf(path)
    meta = read_metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in MODEL_TYPE:
        raise ValueError(
            f"{str(path)!r}: GGUF architecture {arch!r} is not supported; buildlm reads: "
            f"{', '.join(MODEL_TYPE)}"
        )
    tensors = {t.name: t for t in reader.tensors}
    shapes = {name: tuple(int(n) for n in reversed(t.shape)) for name, t in tensors.items()}
    arch_meta = {k.removeprefix(f"{arch}."): v for k, v in meta.items() if k.startswith(f"{arch}.")}
    hf = hf_config_from_gguf(arch, arch_meta, shapes)
    if "rope_freqs.weight" in tensors:  # Llama 3 RoPE scaling
        t = tensors["rope_freqs.weight"]
        factors = decode(t.data, t.tensor_type, shapes["rope_freqs.weight"])
        hf["rope_scaling"] = rope_scaling_from_gguf(meta, factors, hf["rope_theta"], hf["head_dim"])
    if arch in OWN_HEAD and "output.weight" in tensors:  # a tied model's head is written as a copy
        head, emb = tensors["output.weight"], tensors["token_embd.weight"]
        same = head.tensor_type == emb.tensor_type and np.array_equal(head.data, emb.data)
        hf["tie_word_embeddings"] = bool(same)
    model_type = hf["model_type"]
    cfg = config_from_hf(hf)
    heads = {"q": cfg.n_heads, "k": cfg.n_kv_heads}
    hf_state = {}
    for link in weight_links(model_type, cfg):
        stored = [experts_name(link.theirs[0])] if link.stack else link.theirs
        for hf_name in stored:
            name = gguf_name(arch, cfg.n_layers, hf_name)
            if name not in tensors:
                raise ValueError(f"{str(path)!r} lacks the tensor {name!r} a {arch} model needs")
            t = tensors[name]
            value = decode(t.data, t.tensor_type, shapes[name])
            hf_state[hf_name] = from_gguf_layout(arch, hf_name, value, heads)
        if link.stack:  # one (n_experts, out, in) tensor: the per-expert names hf_to_buildlm wants
            hf_state.update(zip(link.theirs, hf_state.pop(stored[0]).unbind(0), strict=True))
    model = GPT(cfg)
    model.load_state_dict(hf_to_buildlm(model_type, cfg, hf_state))
    target = parse_hf_dtype(dtype)
    if target is not None:
        model.to(target)
    fields = {k.removeprefix("tokenizer.ggml."): v for k, v in meta.items()}
    return model.eval(), tokenizer_from_fields(fields)
