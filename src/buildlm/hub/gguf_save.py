"""Save a buildlm `GPT` and its `Tokenizer` as one GGUF file, the format llama.cpp and Ollama run.

A GGUF file is a header, key/value metadata (the architecture: `gguf_config`; the tokenizer:
`gguf_tokenizer`) and the tensors (`gguf_tensors`), written here with the ``gguf`` package that
llama.cpp publishes. The path goes buildlm -> Hugging Face names and config (`hf_weights`,
`hf_config`, as ``save_hf`` does) -> GGUF, so both exports describe the same network.

The file is written beside ``path`` under a temporary name and renamed when complete
(`buildlm.atomic.atomic_file`). An existing file is replaced only with ``force``, and only if it
is a GGUF file itself: nothing else of yours is ever overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import torch

from buildlm.atomic import atomic_file
from buildlm.hub.gguf_config import ARCH, gguf_metadata
from buildlm.hub.gguf_families import OWN_HEAD, llama3_rope_factors
from buildlm.hub.gguf_tensors import DTYPES, encode, gguf_name, hf_tensors, to_gguf_layout
from buildlm.hub.gguf_tokenizer import tokenizer_fields
from buildlm.hub.hf_config import NO_RELU2_EXPORT, config_to_hf, hf_model_type
from buildlm.model import GPT
from buildlm.tokenizer import SentencePieceBPE, Tokenizer

MAGIC = b"GGUF"
_FILE_TYPE = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


def gguf_model_type(model: GPT) -> str:
    """The Hugging Face family a GGUF export of ``model`` goes through (one of `ARCH`'s keys)."""
    if model.config.mlp == "relu2":
        raise ValueError(NO_RELU2_EXPORT.format(fmt="GGUF"))
    try:
        model_type = hf_model_type(model.config)
    except ValueError:
        model_type = None
    # (A Mistral network without a window is a Llama one, and hf_model_type picks llama first.)
    if model_type not in ARCH:
        raise ValueError(
            f"GGUF export supports {', '.join(ARCH)} networks; this model is "
            f"{'none of them' if model_type is None else 'a ' + model_type + ' network'} "
            "(`buildlm convert --to hf` exports more families)"
        )
    return model_type


def check_out_file(path: str | os.PathLike, force: bool) -> None:
    """Refuse to write over anything but an earlier GGUF file, and over that only with ``force``."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder; give the .gguf file to write")
    if not out.exists():
        return
    with open(out, "rb") as f:
        is_gguf = f.read(4) == MAGIC
    if not is_gguf:
        raise ValueError(
            f"{str(out)!r} exists and is not a GGUF file; buildlm will not overwrite it, choose "
            "another --out"
        )
    if not force:
        raise ValueError(f"{str(out)!r} exists; pass --force to replace it")


def save_gguf(
    model: GPT,
    tokenizer: Tokenizer | SentencePieceBPE,
    path: str | os.PathLike,
    dtype: str = "f32",
    force: bool = False,
    name: str | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` to the GGUF file ``path``; ``dtype`` is f32, f16, bf16
    or q8_0 (vectors stay f32, see `gguf_tensors`). Returns the path."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown GGUF dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if tokenizer is None:
        raise ValueError("a GGUF file carries its tokenizer; pass the one the model was trained with")
    check_out_file(path, force)
    cfg = model.config
    model_type = gguf_model_type(model)
    hf = config_to_hf(cfg, model_type)
    arch, meta = gguf_metadata(hf)
    vocab = tokenizer_fields(tokenizer, cfg.vocab_size)
    heads = {"q": cfg.n_heads, "k": cfg.n_kv_heads}
    state = model.state_dict()
    with torch.no_grad(), atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_name(name or Path(path).stem)
        writer.add_file_type(_FILE_TYPE[dtype])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in meta.items():
            full = key if key.startswith("buildlm.") else f"{arch}.{key}"
            if isinstance(value, float):
                writer.add_float32(full, value)
            else:
                writer.add_uint32(full, int(value))
        writer.add_tokenizer_model(vocab["model"])
        writer.add_tokenizer_pre(vocab["pre"])
        writer.add_token_list(vocab["tokens"])
        if "scores" in vocab:  # a SentencePiece-style tokenizer: scores, no merges (gguf_spm)
            writer.add_token_scores(vocab["scores"])
        writer.add_token_types(vocab["token_type"])
        if "merges" in vocab:
            writer.add_token_merges(vocab["merges"])
        for key, add in (("bos_token_id", writer.add_bos_token_id),
                         ("eos_token_id", writer.add_eos_token_id),
                         ("unknown_token_id", writer.add_unk_token_id),
                         ("padding_token_id", writer.add_pad_token_id)):  # fmt: skip
            if vocab.get(key) is not None:
                add(vocab[key])
        writer.add_add_bos_token(False)
        if "add_space_prefix" in vocab:
            writer.add_add_eos_token(False)
            writer.add_add_space_prefix(vocab["add_space_prefix"])
        tensors = list(hf_tensors(model_type, cfg, state))
        if arch in OWN_HEAD and cfg.tie_embeddings:  # llama.cpp wants a head: the embedding's copy
            tensors.append(("lm_head.weight", state["tok_emb.weight"]))
        for hf_name, t in tensors:
            t = to_gguf_layout(arch, hf_name, t, heads)
            data, kind = encode(t, dtype)
            writer.add_tensor(gguf_name(arch, cfg.n_layers, hf_name), data, raw_dtype=kind)
        if cfg.rope_scaling is not None:  # Llama 3: one divisor per frequency (gguf_families)
            factors = llama3_rope_factors(hf["rope_theta"], cfg.head_dim, hf["rope_scaling"])
            writer.add_tensor("rope_freqs.weight", factors.numpy(), raw_dtype=DTYPES["f32"])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(path)
