"""The peer model of the training benchmarks: Hugging Face's GPT2LMHeadModel in buildlm's shape."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from buildlm.model import ModelConfig


def build_hf_gpt2(cfg: ModelConfig, use_cache: bool = True) -> torch.nn.Module:
    """A randomly initialised GPT2LMHeadModel with ``cfg``'s shape, no dropout, SDPA attention.

    ``use_cache=False`` for training: no key/value cache objects in the forward pass.
    """
    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=use_cache,
        bos_token_id=cfg.vocab_size - 1,  # GPT-2's 50256 lies outside a tiny vocabulary
        eos_token_id=cfg.vocab_size - 1,
    )
    hf_cfg._attn_implementation = "sdpa"
    return GPT2LMHeadModel(hf_cfg)
