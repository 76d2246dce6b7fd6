"""Shared fixtures for the inference tests.

Tests run on one thread: their tensors are tiny, so a second OpenMP thread only adds
synchronisation, and on a loaded machine a descheduled thread stalls every op (40x slower).
``gpt2_pair`` is the outside reference for decoding: a transformers GPT-2 and a buildlm GPT with
the same weights, so ``transformers``' ``generate`` can be compared token for token.
"""

import pytest
import torch


@pytest.fixture(scope="session")
def gpt2_pair():
    """A small random transformers GPT-2 and a buildlm GPT holding the same weights.

    The weights are pushed well away from their init (noise of std 0.2) so the next-token
    distributions are far from uniform and decoding choices are clear-cut; no bos/eos token is
    configured, so nothing stops generation unless a test asks for it.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from buildlm.hub.hf_weights import hf_to_buildlm
    from buildlm.model import GPT, ModelConfig

    torch.manual_seed(0)
    hf_cfg = GPT2Config(
        vocab_size=67, n_positions=64, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    hf = GPT2LMHeadModel._from_config(hf_cfg, attn_implementation="eager").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    cfg = ModelConfig.preset(
        "gpt2-124m", vocab_size=67, context_length=64, d_model=32, n_layers=2, n_heads=4
    )
    model = GPT(cfg).eval()
    model.load_state_dict(hf_to_buildlm("gpt2", cfg, hf.state_dict()), strict=True)
    return hf, model


# Two small model families, so every engine behaviour is checked on both position schemes.
MODEL_FAMILIES = {
    "gpt2": dict(preset="tiny"),  # learned positions, LayerNorm, GELU, tied head
    "llama": dict(preset="llama-small", n_kv_heads=2),  # RoPE, RMSNorm, SwiGLU, GQA, untied
    # Gemma 2's block: sandwich (1 + w) norms, GeGLU, scaled embeddings, soft caps (explicit path)
    "gemma2": dict(
        preset="llama-small", n_kv_heads=2, norm_offset=1.0, norm_placement="sandwich",
        mlp="geglu", embed_scale=True, query_pre_attn_scalar=24, attn_logit_softcap=5.0,
        final_logit_softcap=10.0, tie_embeddings=True,
    ),
}  # fmt: skip


@pytest.fixture
def make_model():
    """``make_model(family, context_length=48, device="cpu")``: a small seeded buildlm GPT."""
    from buildlm.model import GPT, ModelConfig

    def build(family: str, context_length: int = 48, device: str = "cpu") -> GPT:
        torch.manual_seed(0)
        args = dict(MODEL_FAMILIES[family])
        preset = args.pop("preset")
        cfg = ModelConfig.preset(
            preset, vocab_size=97, context_length=context_length, d_model=64, n_heads=4,
            n_layers=2, **args,
        )  # fmt: skip
        model = GPT(cfg).eval()
        with torch.no_grad():  # far from uniform, so greedy choices are not near-ties
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        return model.to(device)

    return build
