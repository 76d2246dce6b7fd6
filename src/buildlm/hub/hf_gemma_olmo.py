"""Gemma and OLMo 2 ``config.json`` <-> `ModelConfig`, and where their norms sit in the files.

Both families are Llama networks (RoPE, RMSNorm, gated MLP, grouped-query attention, separate
q/k/v projections under the same tensor names) with a few block details switched on:

===========  ===========  =======  ======  ==================================================
family       norm place   RMSNorm  MLP     other
===========  ===========  =======  ======  ==================================================
gemma        pre          (1 + w)  GeGLU   embeddings x sqrt(d_model)
gemma2       sandwich     (1 + w)  GeGLU   as gemma; query_pre_attn_scalar; soft caps;
                                           local and global layers
gemma3_text  sandwich     (1 + w)  GeGLU   as gemma2, plus a (1 + w) RMSNorm on each q/k head
                                           and another RoPE base for the local layers
olmo2        branch_post  w        SwiGLU  RMSNorm over the whole q and k projections
===========  ===========  =======  ======  ==================================================

Gemma 2 alternates local (sliding-window) and global layers, Gemma 3 has five local layers to
one global; their ``layer_types`` and ``sliding_window`` are `ModelConfig`'s own fields.
Gemma 3 files keep one RoPE setting per layer type (``rope_parameters`` with
``sliding_attention`` and ``full_attention`` entries; older files ``rope_theta`` and
``rope_local_base_freq``): the global one becomes ``rope_theta`` (and any scaling),
the local base ``rope_local_theta``.

`hf_config` and `hf_weights` call the functions here for these families; the rest of the
Llama-family mapping (sizes, RoPE settings, fused q/k/v) is theirs.
"""

from __future__ import annotations

from typing import Any

from buildlm.model import ModelConfig

FAMILIES = ("gemma", "gemma2", "gemma3_text", "olmo2")
ARCHITECTURES = {
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
}

_GEMMA = dict(
    vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
    num_attention_heads=16, num_key_value_heads=16, head_dim=256,
    hidden_act="gelu_pytorch_tanh", max_position_embeddings=8192, rms_norm_eps=1e-6,
    initializer_range=0.02, tie_word_embeddings=True, rope_theta=10000.0, attention_bias=False,
)  # fmt: skip
_GEMMA2 = {
    **_GEMMA, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "hidden_activation": "gelu_pytorch_tanh",
    "query_pre_attn_scalar": 256, "sliding_window": 4096, "layer_types": None,
    "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
}  # fmt: skip
# transformers' defaults for the keys read here (GemmaConfig, Gemma2Config, Gemma3TextConfig,
# Olmo2Config).
DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma": _GEMMA,
    "gemma2": _GEMMA2,
    "gemma3_text": {
        **_GEMMA2, "vocab_size": 262208, "max_position_embeddings": 131072,
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
        "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "sliding_window_pattern": 6,
    },
    "olmo2": dict(
        vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
        max_position_embeddings=2048, rms_norm_eps=1e-5, initializer_range=0.02,
        tie_word_embeddings=False, rope_theta=10000.0, attention_bias=False,
    ),
}  # fmt: skip

# The block-detail fields at their defaults: what every other family (GPT-2, Llama, Qwen) needs.
PLAIN_BLOCK = dict(
    norm_placement="pre", qk_norm_scope="head", norm_offset=0.0, embed_scale=False,
    query_pre_attn_scalar=None, attn_logit_softcap=None, final_logit_softcap=None,
)  # fmt: skip
_GEMMA_BLOCK = dict(
    position="rope", norm="rmsnorm", mlp="geglu", bias=False, qkv_bias=False, norm_offset=1.0,
    embed_scale=True, qk_norm=False, rope_scaling=None,
)  # fmt: skip
# What a buildlm config must hold to be each family (fields left out may take any value).
WANT: dict[str, dict[str, Any]] = {
    "gemma": {**PLAIN_BLOCK, **_GEMMA_BLOCK},
    "gemma2": {**_GEMMA_BLOCK, "norm_placement": "sandwich", "qk_norm_scope": "head"},
    "gemma3_text": {
        **_GEMMA_BLOCK, "norm_placement": "sandwich", "qk_norm": True, "qk_norm_scope": "head",
        "attn_logit_softcap": None,  # transformers' Gemma 3 would not apply it
    },
    "olmo2": {
        **PLAIN_BLOCK, "position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False,
        "qkv_bias": False, "norm_placement": "branch_post", "qk_norm": True, "qk_norm_scope": "all",
    },
}  # fmt: skip

# Keys whose explicit ``null`` means "off", not "transformers' default".
NULL_MEANS_OFF = ("attn_logit_softcapping", "final_logit_softcapping", "sliding_window")
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def _unsupported(model_type: str, what: str) -> ValueError:
    return ValueError(f"config.json ({model_type}): {what} is not supported by buildlm")


def block_from_hf(model_type: str, c: dict[str, Any]) -> dict[str, Any]:
    """The `ModelConfig` fields of a ``model_type`` file's block details (``c``: its config.json
    over `DEFAULTS`), beyond the sizes and RoPE settings every Llama-like family shares."""
    if c.get("attention_bias"):  # q/k/v/o biases but none in the MLP: no buildlm switch for it
        raise _unsupported(model_type, "attention_bias=true")
    if model_type == "olmo2":
        if c["hidden_act"] != "silu":
            raise _unsupported(model_type, f"hidden_act={c['hidden_act']!r} (only 'silu', SwiGLU)")
        return dict(mlp="swiglu", norm_placement="branch_post", qk_norm=True, qk_norm_scope="all")
    act = c["hidden_act"] if model_type == "gemma" else c["hidden_activation"]
    if act not in (*_GELU_TANH, "gelu"):  # Gemma's "gelu" always meant the tanh approximation
        raise _unsupported(model_type, f"activation {act!r} (only the tanh GELU, GeGLU)")
    out = dict(mlp="geglu", norm_offset=1.0, embed_scale=True, qkv_bias=False)
    if model_type == "gemma3_text":
        out.update(qk_norm=True)
    if model_type != "gemma":
        # transformers' Gemma 3 keeps attn_logit_softcapping in its config but never applies it
        # (5.x); buildlm computes what transformers computes.
        attn_cap = None if model_type == "gemma3_text" else c["attn_logit_softcapping"]
        out.update(
            norm_placement="sandwich",
            query_pre_attn_scalar=c["query_pre_attn_scalar"],
            attn_logit_softcap=attn_cap,
            final_logit_softcap=c["final_logit_softcapping"],
        )
    return out


def windows_from_hf(model_type: str, c: dict[str, Any]) -> dict[str, Any]:
    """``sliding_window``, ``layer_types`` and ``rope_local_theta`` of a Gemma 2/3 file.

    For Gemma 3 this also replaces ``c``'s per-layer-type ``rope_parameters`` by the global
    layers' entry, the one RoPE setting the rest of `hf_config` reads.
    """
    if model_type not in ("gemma2", "gemma3_text"):
        return {}
    n, window = c["num_hidden_layers"], c.get("sliding_window")
    every = 2 if model_type == "gemma2" else c.get("sliding_window_pattern", 6)
    types = c.get("layer_types") or [
        "full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(n)
    ]
    if window is None:  # no window: the local layers see everything
        types = ["full_attention"] * n
    out: dict[str, Any] = dict(sliding_window=window, layer_types=list(types))
    if model_type == "gemma3_text":
        params = c.get("rope_parameters")
        if isinstance(params, dict) and "full_attention" in params:
            local = params.get("sliding_attention") or {}
            c["rope_parameters"] = params["full_attention"]
            if local.get("rope_type", "default") != "default":
                raise _unsupported(model_type, f"local layers' rope scaling {local!r}")
            out["rope_local_theta"] = float(local.get("rope_theta", c["rope_local_base_freq"]))
        else:  # transformers 4.x: rope_theta (+ rope_scaling) global, rope_local_base_freq local
            out["rope_local_theta"] = float(c["rope_local_base_freq"])
    return out


def window_mismatches(cfg: ModelConfig, model_type: str) -> list[str]:
    """What in ``cfg``'s windows and RoPE bases no ``model_type`` network has (empty: none)."""
    problems = []
    if model_type in ("gemma", "olmo2") and "sliding_attention" in cfg.layer_types:
        problems.append(f"sliding_window={cfg.sliding_window} ({model_type} has no local layers)")
    if model_type != "gemma3_text" and cfg.rope_local_theta is not None:
        problems.append(f"rope_local_theta={cfg.rope_local_theta} (one RoPE base for all layers)")
    return problems


def block_to_hf(model_type: str, cfg: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` keys of a ``model_type`` file beyond the Llama-like ones."""
    out: dict[str, Any] = {"attention_bias": False}
    if model_type == "gemma":
        out["hidden_act"] = "gelu_pytorch_tanh"
    elif model_type in ("gemma2", "gemma3_text"):
        scalar = cfg.head_dim if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar
        out.update(
            hidden_act="gelu_pytorch_tanh",
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=scalar,
            attn_logit_softcapping=cfg.attn_logit_softcap,
            final_logit_softcapping=cfg.final_logit_softcap,
            layer_types=list(cfg.layer_types),
            # transformers reads a window even where no layer is local
            sliding_window=cfg.sliding_window or cfg.context_length,
        )
    if model_type == "gemma3_text":
        local = cfg.rope_theta if cfg.rope_local_theta is None else cfg.rope_local_theta
        out.update(
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                "sliding_attention": {"rope_type": "default", "rope_theta": local},
            },
            rope_local_base_freq=local,  # transformers 4.x
        )
    return out


def block_norm_names(model_type: str) -> tuple[tuple[str, str], ...]:
    """(buildlm norm, Hugging Face norm) within one block, for every Llama-like family."""
    if model_type == "olmo2":
        return (
            ("norm_attn_out", "post_attention_layernorm"),
            ("norm_mlp_out", "post_feedforward_layernorm"),
        )
    if model_type in ("gemma2", "gemma3_text"):
        return (
            ("norm1", "input_layernorm"),
            ("norm_attn_out", "post_attention_layernorm"),
            ("norm2", "pre_feedforward_layernorm"),
            ("norm_mlp_out", "post_feedforward_layernorm"),
        )
    # Llama, Qwen, Gemma 1: a norm in front of attention, and one in front of the MLP that
    # transformers calls post_attention_layernorm (it comes after attention).
    return (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"))
