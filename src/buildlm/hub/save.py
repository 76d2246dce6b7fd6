"""Save a buildlm `GPT` as a Hugging Face model folder.

The folder is what ``transformers.AutoModelForCausalLM.from_pretrained`` reads, and gives the
same logits as the buildlm model::

    config.json             the architecture in transformers' terms (`hf_config.config_to_hf`)
    model.safetensors       the weights under transformers' names (`hf_weights.buildlm_to_hf`)
    tokenizer.json          the tokenizer, when one is given (``tokenizers`` reads it; a
                            SentencePiece-style one is written back as it was read)
    tokenizer_config.json   tells ``AutoTokenizer`` to use tokenizer.json as it is

The folder is written under a temporary name beside ``path`` and renamed into place when
complete, so an interrupted save never leaves a half-written model behind; files of yours in
the folder are kept (`buildlm.atomic`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from buildlm.atomic import atomic_folder, atomic_write_json
from buildlm.hub.hf_config import config_to_hf, hf_dtype_name, hf_model_type
from buildlm.hub.hf_weights import buildlm_to_hf
from buildlm.hub.safetensors_io import write_safetensors
from buildlm.model import GPT
from buildlm.tokenizer import SentencePieceBPE, Tokenizer

HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def save_hf(
    model: GPT,
    tokenizer: Tokenizer | SentencePieceBPE | None,
    path: str | os.PathLike,
    model_type: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``model`` (and ``tokenizer``, which may be ``None``) as a Hugging Face folder.

    ``model_type`` (``"gpt2"``, ``"llama"``, ``"qwen2"``, ``"qwen3"``) is found from the config
    when not given; a config no transformers family computes raises ``ValueError`` naming the
    fields that differ. The weights keep their dtype. Returns the folder.

    An existing ``path`` keeps every file buildlm did not write (a README.md, a licence); an
    earlier export there is replaced only with ``force`` (see `buildlm.atomic`).
    """
    cfg = model.config
    model_type = hf_model_type(cfg, model_type)
    state = model.state_dict()
    dtypes = {t.dtype for t in state.values()}
    dtype = hf_dtype_name(next(iter(dtypes))) if len(dtypes) == 1 else "float32"
    if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only {cfg.vocab_size} "
            "embeddings; pass the tokenizer the model was trained with"
        )
    eos = tokenizer.eot_token if tokenizer is not None else None
    hf_config = config_to_hf(cfg, model_type, dtype=dtype, eos_token_id=eos)
    with atomic_folder(path, force=force, will_write=HF_FILES) as tmp:
        atomic_write_json(tmp / "config.json", hf_config)
        with torch.no_grad():
            write_safetensors(
                tmp / "model.safetensors",
                buildlm_to_hf(model_type, cfg, state),
                metadata={"format": "pt"},
            )
        if tokenizer is not None:
            tokenizer.save_hf(tmp / "tokenizer.json")
            # A byte-level tokenizer's <|endoftext|> is both; a SentencePiece-style one names its
            # own (<s> and </s>, <bos> and <eos>).
            eot = next((t for t, i in tokenizer.special_tokens.items() if i == eos), None)
            atomic_write_json(
                tmp / "tokenizer_config.json",
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "model_max_length": cfg.context_length,
                    "bos_token": getattr(tokenizer, "bos", None) or eot,
                    "eos_token": eot,
                    "clean_up_tokenization_spaces": False,
                },
            )
    return Path(path)
