"""Checks for stage 10 (from GPT-2 to Llama and Qwen): your pieces against buildlm's and
transformers' Llama / Qwen3 modules.

Each check calls your code first (so an unfinished stub says ``NotImplementedError`` before
anything else), copies the reference's weights into yours with ``load_state_dict`` where there
are weights (so the parameter names must be buildlm's: every message lists them), runs both on
the same input and raises ``AssertionError`` with what was expected, what came out, and a hint.
The ``transformers`` references are built from small config objects with random weights, in
their plain ("eager") attention.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, Qwen3Config
from transformers.models.llama import modeling_llama as hf_llama
from transformers.models.qwen3 import modeling_qwen3 as hf_qwen3

from buildlm.model import GPT, ModelConfig
from buildlm.model.attention import CausalSelfAttention
from buildlm.model.attention import repeat_kv as package_repeat_kv
from buildlm.model.block import Block
from buildlm.model.mlp import SwiGLUMLP
from buildlm.model.norm import RMSNorm as PackageRMSNorm
from buildlm.model.position import RotaryEmbedding


def _same(what: str, got, expected: torch.Tensor, hint: str, atol: float = 1e-5) -> None:
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}. {hint}")
    if got.shape != expected.shape:
        raise AssertionError(
            f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}. {hint}"
        )
    if not torch.allclose(got, expected, atol=atol, rtol=1e-5):
        gap = (got - expected).abs().max().item()
        raise AssertionError(
            f"{what}: values differ by up to {gap:.3g} (tolerance {atol}).\n"
            f"expected {expected.flatten()[:5]}\ngot      {got.flatten()[:5]}\nHint: {hint}"
        )


def _load(mine: nn.Module, reference_state: dict, what: str) -> None:
    """``mine.load_state_dict(reference_state)`` with a message naming the keys."""
    wanted, have = set(reference_state), set(mine.state_dict())
    if wanted != have:
        raise AssertionError(
            f"{what}: the parameter names differ from buildlm's.\nmissing in yours: "
            f"{sorted(wanted - have)}\nnot in buildlm's: {sorted(have - wanted)}\nHint: name the "
            "sub-modules as the docstring says; Llama has no biases (bias=False everywhere)."
        )
    mine.load_state_dict(reference_state)


def _randomise(module: nn.Module, seed: int = 1, std: float = 0.3) -> None:
    """Non-trivial weights (norm gains not 1), so every parameter matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std + (1.0 if p.dim() == 1 else 0.0))


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _hf_config(cls, **kwargs):
    """A transformers config with plain attention (no fused kernel) and RoPE base ``theta``."""
    theta = kwargs.pop("theta", 10000.0)
    config = cls(bos_token_id=None, eos_token_id=None, pad_token_id=None, **kwargs)
    if getattr(config, "rope_parameters", None) is not None:  # transformers >= 5
        config.rope_parameters["rope_theta"] = theta
    else:
        config.rope_theta = theta
    config._attn_implementation = "eager"
    return config


def _hf_cos_sin(config, t: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' cos and sin for positions offset .. offset + t - 1, each (1, T, head_dim)."""
    rope = hf_llama.LlamaRotaryEmbedding(config)
    positions = torch.arange(offset, offset + t)[None]
    return rope(torch.zeros(1, dtype=torch.float32), positions)


def _causal_bias(t: int) -> torch.Tensor:
    """The additive mask transformers' eager attention takes: 0 on and below the diagonal."""
    return torch.zeros(t, t).masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1),
                                         float("-inf"))[None, None]  # fmt: skip


# ---- 1. RoPE ------------------------------------------------------------------------------


def check_rope(rotate_half, rope_cos_sin, apply_rope) -> None:
    """rotate_half, rope_cos_sin and apply_rope against transformers' Llama and buildlm's RoPE."""
    x = _x(2, 3, 7, 16)  # (B, H, T, head_dim)
    _same("rotate_half vs transformers' rotate_half", rotate_half(x), hf_llama.rotate_half(x),
          "split the last axis in two halves x1, x2 (x.chunk(2, dim=-1)) and return "
          "cat([-x2, x1]); this is a 90-degree turn of every pair (i, i + head_dim/2).")  # fmt: skip
    theta, t, offset = 500000.0, 9, 5  # Llama 3's base; positions 5 .. 13
    positions = torch.arange(offset, offset + t)
    cos, sin = rope_cos_sin(16, positions, theta)
    config = _hf_config(LlamaConfig, hidden_size=64, num_attention_heads=4, theta=theta,
                        max_position_embeddings=64)  # fmt: skip
    hf_cos, hf_sin = _hf_cos_sin(config, t, offset)
    hint = ("inv_freq = 1 / theta ** (arange(0, head_dim, 2) / head_dim), shape (head_dim/2,); "
            "angles = positions[:, None] * inv_freq (T, head_dim/2); then cat([angles, angles], "
            "dim=-1): the rotate-half layout pairs dimension i with i + head_dim/2.")  # fmt: skip
    _same("rope_cos_sin(16, positions 5..13, theta=500000) cos vs transformers' Llama", cos, hf_cos[0], hint)
    _same("rope_cos_sin(16, positions 5..13, theta=500000) sin vs transformers' Llama", sin, hf_sin[0], hint)
    q, k = _x(2, 4, t, 16, seed=1), _x(2, 2, t, 16, seed=2)
    hf_q, hf_k = hf_llama.apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    hint = "x * cos + rotate_half(x) * sin; cos and sin (T, head_dim) broadcast over (B, H)."
    _same("apply_rope(q) vs transformers' apply_rotary_pos_emb", apply_rope(q, cos, sin), hf_q, hint)
    _same("apply_rope(k) vs transformers' apply_rotary_pos_emb", apply_rope(k, cos, sin), hf_k, hint)
    package = RotaryEmbedding(16, context_length=64, theta=theta)
    _same("apply_rope vs buildlm's RotaryEmbedding(q, offset=5)", apply_rope(q, cos, sin),
          package(q, offset=offset), hint)  # fmt: skip
    print("rope: rotate_half, rope_cos_sin and apply_rope equal transformers' Llama RoPE and "
          "buildlm's RotaryEmbedding (positions 5..13, theta 500,000)")


def check_rope_properties(rope_cos_sin, apply_rope, head_dim: int = 64) -> dict[int, float]:
    """Rotated q . k depends only on m - n, and rotation keeps every vector's length.

    Returns {distance m - n: the score} for one query and one key vector.
    """
    cos, sin = rope_cos_sin(head_dim, torch.arange(48))  # (48, head_dim)
    q, k = _x(head_dim, seed=3), _x(head_dim, seed=4)
    q_at = apply_rope(q.expand(48, head_dim), cos, sin)  # the same query at positions 0..47
    k_at = apply_rope(k.expand(48, head_dim), cos, sin)  # the same key at positions 0..47
    scores = q_at @ k_at.T  # (48, 48): query at m, key at n
    by_distance: dict[int, float] = {}
    for distance in (0, 1, 5, 17):
        diagonal = torch.diagonal(scores, offset=-distance)  # every (m, m - distance)
        spread = (diagonal.max() - diagonal.min()).item()
        if spread > 1e-3:
            raise AssertionError(
                f"the scores q(m) . k(m - {distance}) differ by {spread:.3g} between positions m; "
                "with RoPE they must depend only on the distance m - n. Hint: rotate queries and "
                "keys with the same cos/sin table, one row per position."
            )
        by_distance[distance] = diagonal[0].item()
    lengths = q_at.norm(dim=-1)
    if (lengths - q.norm()).abs().max() > 1e-4:
        raise AssertionError(
            f"rotation changed a vector's length: |q| = {q.norm():.4f}, after RoPE "
            f"{lengths.min():.4f} .. {lengths.max():.4f}. Hint: each pair (i, i + head_dim/2) "
            "must be turned by one angle: the same cos and sin for both halves."
        )
    print("RoPE scores depend only on m - n:",
          ", ".join(f"m - n = {d}: {s:+.3f}" for d, s in by_distance.items()))  # fmt: skip
    print(f"and every rotated query keeps its length {q.norm():.4f}")
    return by_distance


# ---- 2. RMSNorm ---------------------------------------------------------------------------


def check_rms_norm(RMSNorm) -> None:
    """RMSNorm(dim, eps) equals buildlm's RMSNorm and transformers' LlamaRMSNorm."""
    mine = RMSNorm(16, eps=1e-6)
    fresh = mine.weight.detach().clone() if hasattr(mine, "weight") else None
    reference = PackageRMSNorm(16, eps=1e-6)
    _randomise(reference)
    _load(mine, reference.state_dict(), "RMSNorm")
    x = _x(3, 4, 16) * 5 + 2
    hint = ("x / sqrt(mean(x**2) + eps) * weight, the mean over the last axis (keepdim=True); "
            "no mean is subtracted and there is no bias.")  # fmt: skip
    _same("RMSNorm vs buildlm's RMSNorm", mine(x), reference(x), hint)
    llama = hf_llama.LlamaRMSNorm(16, eps=1e-6)
    llama.load_state_dict(reference.state_dict())
    _same("RMSNorm vs transformers' LlamaRMSNorm", mine(x), llama(x), hint)
    tiny = torch.full((1, 16), 1e-4)  # eps matters where the vector is tiny
    _same("RMSNorm of a tiny vector (eps inside the square root)", mine(tiny), reference(tiny), hint)
    if fresh is None or not torch.equal(fresh, torch.ones(16)):
        raise AssertionError("a new RMSNorm's weight (gain) should start at ones")
    print("RMSNorm: equal to buildlm's RMSNorm and to transformers' LlamaRMSNorm")


# ---- 3. SwiGLU ----------------------------------------------------------------------------


def check_swiglu(SwiGLU) -> None:
    """SwiGLU(d_model, d_ff) loads buildlm's SwiGLUMLP weights; equals it and LlamaMLP."""
    mine = SwiGLU(12, 40)
    reference = SwiGLUMLP(12, 40)
    _randomise(reference, std=0.3)
    _load(mine, reference.state_dict(), "SwiGLU")
    x = _x(2, 5, 12)
    hint = "down(silu(gate(x)) * up(x)) with silu(g) = g * sigmoid(g); three Linear layers, bias=False."
    with torch.no_grad():
        _same("SwiGLU vs buildlm's SwiGLUMLP (same weights)", mine(x), reference(x), hint)
        config = _hf_config(LlamaConfig, hidden_size=12, intermediate_size=40, num_attention_heads=4)
        llama = hf_llama.LlamaMLP(config)
        state = reference.state_dict()
        llama.load_state_dict({f"{n}_proj.weight": state[f"{n}.weight"] for n in ("gate", "up", "down")})
        _same("SwiGLU vs transformers' LlamaMLP (same weights)", mine(x), llama(x), hint)
    print("SwiGLU: same weights as buildlm's SwiGLUMLP, same outputs; equal to transformers' LlamaMLP")


# ---- 4. Grouped-query attention -----------------------------------------------------------


def check_repeat_kv(repeat_kv) -> None:
    """repeat_kv(x, n_rep) equals transformers' and buildlm's repeat_kv."""
    x = _x(2, 3, 5, 4)  # (B, KV=3, T, d)
    got = repeat_kv(x, 4)
    hint = ("query head j reads key/value head j // n_rep: each head is repeated n_rep times "
            "*next to itself* (kv0, kv0, kv0, kv0, kv1, ...), as torch.repeat_interleave(x, n_rep, "
            "dim=1) does, not tiled (kv0, kv1, kv2, kv0, ...).")  # fmt: skip
    _same("repeat_kv(x, 4) vs transformers' repeat_kv", got, hf_llama.repeat_kv(x, 4), hint, atol=0)
    _same("repeat_kv(x, 4) vs buildlm's repeat_kv", got, package_repeat_kv(x, 4), hint, atol=0)
    _same("repeat_kv(x, 1) (multi-head attention: nothing to share)", repeat_kv(x, 1), x, hint, atol=0)
    print("repeat_kv: equal to transformers' and buildlm's (query head j reads key/value head j // n_rep)")


def _attention_config(n_kv_heads: int, qk_norm: bool = False) -> ModelConfig:
    return ModelConfig(vocab_size=50, context_length=32, d_model=32, n_heads=4, n_kv_heads=n_kv_heads,
                       n_layers=1, bias=False, norm="rmsnorm", position="rope", mlp="swiglu",
                       qk_norm=qk_norm, attention="manual")  # fmt: skip


def _package_attention(config: ModelConfig, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, tuple]:
    """buildlm's attention with random weights, its output on x, and the (cos, sin) it used."""
    torch.manual_seed(0)
    reference = CausalSelfAttention(config).eval()
    _randomise(reference, std=0.2)
    rope = RotaryEmbedding(config.head_dim, config.context_length, config.rope_theta)
    with torch.no_grad():
        expected, _ = reference(x, rope)
    t = x.shape[1]
    return reference, expected, (rope.cos[:t], rope.sin[:t])


def _hf_attention(module_cls, hf_config, reference: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' attention with buildlm's weights (the fused qkv split back into three)."""
    h, kv, d = reference.n_heads, reference.n_kv_heads, reference.head_dim
    q, k, v = reference.qkv.weight.detach().split([h * d, kv * d, kv * d], dim=0)
    state = {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v,
             "o_proj.weight": reference.proj.weight.detach()}  # fmt: skip
    if reference.q_norm is not None:
        state["q_norm.weight"] = reference.q_norm.weight.detach()
        state["k_norm.weight"] = reference.k_norm.weight.detach()
    theirs = module_cls(hf_config, layer_idx=0).eval()
    theirs.load_state_dict(state)
    with torch.no_grad():
        out, _ = theirs(x, position_embeddings=_hf_cos_sin(hf_config, x.shape[1]),
                        attention_mask=_causal_bias(x.shape[1]))  # fmt: skip
    return out


def check_grouped_query_attention(GroupedQueryAttention) -> None:
    """GQA (and MHA, MQA) with RoPE: equal to buildlm's CausalSelfAttention and LlamaAttention."""
    x = _x(2, 9, 32)
    hint = ("q, k, v = qkv(x).split([H*d, KV*d, KV*d], dim=-1), viewed as heads; RoPE on q and k; "
            "repeat_kv(k/v, H // KV); softmax(q k^T / sqrt(d)) with -inf above the diagonal; "
            "heads side by side again (B, T, H*d); proj.")  # fmt: skip
    for n_kv_heads, name in ((2, "grouped-query, 4 query heads / 2 key-value heads"),
                             (4, "multi-head, 4 / 4"), (1, "multi-query, 4 / 1")):  # fmt: skip
        config = _attention_config(n_kv_heads)
        mine = GroupedQueryAttention(config).eval()
        reference, expected, (cos, sin) = _package_attention(config, x)
        _load(mine, reference.state_dict(), f"GroupedQueryAttention ({name})")
        with torch.no_grad():
            got = mine(x, cos, sin)
        _same(f"GroupedQueryAttention ({name}) vs buildlm's CausalSelfAttention", got, expected, hint)
    hf_config = _hf_config(LlamaConfig, hidden_size=32, num_attention_heads=4, num_key_value_heads=1,
                           max_position_embeddings=32)  # fmt: skip
    _same("GroupedQueryAttention (4 / 1) vs transformers' LlamaAttention (same weights)", got,
          _hf_attention(hf_llama.LlamaAttention, hf_config, reference, x), hint)  # fmt: skip
    print("GroupedQueryAttention: equal to buildlm's CausalSelfAttention with 2, 4 and 1 key/value "
          "heads, and to transformers' LlamaAttention")


# ---- 5. QK-norm ---------------------------------------------------------------------------


def check_qk_norm(QKNormAttention) -> None:
    """Attention with per-head RMSNorm on q and k: equal to buildlm's and Qwen3Attention."""
    x = _x(2, 9, 32) * 3
    config = _attention_config(2, qk_norm=True)
    mine = QKNormAttention(config).eval()
    reference, expected, (cos, sin) = _package_attention(config, x)
    _load(mine, reference.state_dict(), "QKNormAttention")
    hint = ("in project(): q_norm over each query head's head_dim numbers, k_norm over each key "
            "head's, after the split into heads and BEFORE RoPE (forward rotates what project "
            "returns); v is not normalised.")  # fmt: skip
    with torch.no_grad():
        got = mine(x, cos, sin)
    _same("QKNormAttention vs buildlm's CausalSelfAttention(qk_norm=True)", got, expected, hint)
    hf_config = _hf_config(Qwen3Config, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=8, max_position_embeddings=32, rms_norm_eps=config.norm_eps)  # fmt: skip
    _same("QKNormAttention vs transformers' Qwen3Attention (same weights)", got,
          _hf_attention(hf_qwen3.Qwen3Attention, hf_config, reference, x), hint)  # fmt: skip
    print("QKNormAttention: equal to buildlm's CausalSelfAttention(qk_norm=True) and to "
          "transformers' Qwen3Attention")


# ---- 6. The Llama-style model -------------------------------------------------------------


def llama_config(**overrides) -> ModelConfig:
    """A small Llama-shaped buildlm config (the checks' and the notebook's)."""
    shape = dict(vocab_size=97, context_length=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                 d_ff=88, bias=False, norm="rmsnorm", position="rope", mlp="swiglu",
                 tie_embeddings=False, rope_theta=50000.0)  # fmt: skip
    shape.update(overrides)
    return ModelConfig(**shape)


def check_llama_block(LlamaBlock) -> None:
    """LlamaBlock(config) loads buildlm's Block weights (a Llama config) and gives its outputs."""
    config = llama_config()
    mine = LlamaBlock(config).eval()
    torch.manual_seed(0)
    reference = Block(config).eval()
    _randomise(reference, std=0.2)
    _load(mine, reference.state_dict(), "LlamaBlock")
    rope = RotaryEmbedding(config.head_dim, config.context_length, config.rope_theta)
    x = _x(2, 7, 32)
    with torch.no_grad():
        expected, _ = reference(x, rope)
        got = mine(x, rope.cos[:7], rope.sin[:7])
    _same("LlamaBlock vs buildlm's Block (same weights)", got, expected,
          "pre-norm: x = x + attn(norm1(x), cos, sin); then x = x + mlp(norm2(x)); RMSNorm with "
          "config.norm_eps, SwiGLU of width config.d_ff.")  # fmt: skip
    print("LlamaBlock: same weights as buildlm's Block with a Llama config, same outputs")


def check_llama_model(LlamaModel) -> None:
    """LlamaModel loads buildlm GPTs of Llama shape (untied) and Qwen3 shape (QK-norm, tied)."""
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(0))
    shapes = {
        "Llama (untied head)": llama_config(),
        "Qwen3 (QK-norm, tied head, head_dim 16 != d_model / n_heads)":
            llama_config(qk_norm=True, tie_embeddings=True, head_dim=16),
    }  # fmt: skip
    for name, config in shapes.items():
        mine = LlamaModel(config).eval()
        torch.manual_seed(0)
        reference = GPT(config).eval()
        _randomise(reference, std=0.2)
        _load(mine, reference.state_dict(), f"LlamaModel, {name}")
        with torch.no_grad():
            got, expected = mine(ids), reference(ids)
        _same(f"LlamaModel logits vs buildlm's GPT, {name}", got, expected,
              "tok_emb (no position embedding); cos, sin = rope_cos_sin(config.head_dim, "
              "arange(T), config.rope_theta) once, passed to every block; final norm; lm_head, "
              "or x @ tok_emb.weight.T when config.tie_embeddings (then no lm_head at all).",
              atol=1e-4)  # fmt: skip
    print("LlamaModel: loads buildlm's Llama-shaped and Qwen3-shaped GPTs, same logits")


# ---- 6b. A Hugging Face folder into your model --------------------------------------------


def check_convert_llama(convert_llama, LlamaModel, config: ModelConfig, hf_model: nn.Module,
                        ids: torch.Tensor) -> nn.Module:  # fmt: skip
    """The converted state dict loads strictly into your LlamaModel and gives transformers' logits."""
    state = convert_llama(hf_model.state_dict(), config)
    mine = LlamaModel(config).eval()
    names = sorted(mine.state_dict())
    if not isinstance(state, dict) or sorted(state) != names:
        got = sorted(state) if isinstance(state, dict) else []
        raise AssertionError(
            f"the converted state dict's names differ from LlamaModel's.\nmissing: "
            f"{sorted(set(names) - set(got))[:6]}\nextra: {sorted(set(got) - set(names))[:6]}\n"
            "Hint: one entry per name of LlamaModel(config).state_dict(); lm_head.weight only "
            "when the head is not tied."
        )
    mine.load_state_dict(state, strict=True)
    with torch.no_grad():
        got, expected = mine(ids), hf_model(input_ids=ids).logits
    _same("your converted LlamaModel's logits vs transformers'", got, expected,
          "attn.qkv.weight is torch.cat([q_proj, k_proj, v_proj] weights, dim=0): nn.Linear "
          "keeps (out, in), so the outputs are stacked along the rows. No transpose anywhere: "
          "Llama's layers are nn.Linear already.")  # fmt: skip
    print(f"convert_llama: same logits as transformers (largest gap {(got - expected).abs().max():.1e})")
    return mine


def check_load_llama_folder(load_llama_folder, folder, hf_model: nn.Module, package_model: nn.Module,
                            ids: torch.Tensor) -> nn.Module:  # fmt: skip
    """Your model from the folder: transformers' logits and buildlm.hub.load_hf's, to 1e-5."""
    mine = load_llama_folder(folder)
    if not isinstance(mine, nn.Module):
        raise AssertionError(f"load_llama_folder returned {type(mine).__name__}, not your LlamaModel")
    if mine.training:
        raise AssertionError("return the model in eval mode: model.eval()")
    with torch.no_grad():
        got = mine(ids)
        theirs, ours = hf_model(input_ids=ids).logits, package_model(ids)
    hint = ("read every size from config.json (hidden_size, num_hidden_layers, num_attention_heads, "
            "num_key_value_heads, head_dim, intermediate_size, rms_norm_eps, the RoPE base, "
            "tie_word_embeddings; model_type 'qwen3' means QK-norm).")  # fmt: skip
    _same(f"{folder.name}: your logits vs transformers'", got, theirs, hint)
    _same(f"{folder.name}: your logits vs buildlm.hub.load_hf's", got, ours, hint)
    print(f"load_llama_folder({folder.name!r}): logits equal to transformers' (largest gap "
          f"{(got - theirs).abs().max():.1e}) and to buildlm.hub.load_hf's "
          f"({(got - ours).abs().max():.1e})")
    return mine
