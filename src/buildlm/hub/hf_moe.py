"""The mixture-of-experts families on the Hugging Face side: Mixtral, Qwen2-MoE, Qwen3-MoE.

Each is a Llama-style network (Mixtral: Llama's attention; Qwen2-MoE: Qwen2's q/k/v biases;
Qwen3-MoE: Qwen3's q/k RMSNorm) whose MLPs are mixtures of experts (`buildlm.model.moe`).
`hf_config` and `hf_weights` handle the shared part and call this file for the MoE part:

==========  ===========================  =========  ===============================  ========
family      router                       top-k      which layers are MoE             shared
==========  ===========================  =========  ===============================  ========
mixtral     softmax, renormalised        2 of 8     all                              none
qwen2_moe   softmax, norm_topk_prob      4 of 60    every decoder_sparse_step-th,    1, gated
                                                    except mlp_only_layers
qwen3_moe   softmax, norm_topk_prob      8 of 128   as qwen2_moe                     none
==========  ===========================  =========  ===============================  ========

On disk each expert is its own SwiGLU MLP (``experts.7.gate_proj.weight``, Mixtral's
``experts.7.w1.weight``); buildlm stacks the n_experts matrices of a kind into one
(n_experts, out, in) tensor (a `Link` with ``stack=True``).
"""

from __future__ import annotations

from typing import Any

from buildlm.model import ModelConfig

MOE_ARCHITECTURES = {
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}

_LLAMA_LIKE = dict(
    hidden_act="silu", initializer_range=0.02, tie_word_embeddings=False, head_dim=None,
)  # fmt: skip
# transformers' defaults for the keys read here (MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig).
MOE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mixtral": dict(
        **_LLAMA_LIKE, vocab_size=32000, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
        num_experts_per_tok=2, num_local_experts=8,
    ),
    "qwen2_moe": dict(
        **_LLAMA_LIKE, vocab_size=151936, hidden_size=2048, intermediate_size=5632,
        num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
        max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=10000.0,
        use_sliding_window=False, qkv_bias=True, num_experts=60, num_experts_per_tok=4,
        moe_intermediate_size=1408, shared_expert_intermediate_size=5632, norm_topk_prob=False,
        decoder_sparse_step=1, mlp_only_layers=[],
    ),
    "qwen3_moe": dict(
        **_LLAMA_LIKE, vocab_size=151936, hidden_size=2048, intermediate_size=6144,
        num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=4,
        max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=10000.0,
        attention_bias=False, use_sliding_window=False, sliding_window=None, num_experts=128,
        num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=False,
        decoder_sparse_step=1, mlp_only_layers=[],
    ),
}  # fmt: skip

# The (buildlm, Hugging Face) names of one expert's three matrices, per family.
_EXPERT_NAMES = {
    "mixtral": (("w_gate", "w1"), ("w_up", "w3"), ("w_down", "w2")),
    "qwen2_moe": (("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj")),
}
_EXPERT_NAMES["qwen3_moe"] = _EXPERT_NAMES["qwen2_moe"]


def moe_fields_from_hf(model_type: str, c: dict[str, Any]) -> dict[str, Any]:
    """The `ModelConfig` MoE fields of a parsed config.json (``{}`` for a dense family)."""
    if model_type not in MOE_ARCHITECTURES:
        return {}
    n_experts = c.get("num_local_experts") or c.get("num_experts")
    fields: dict[str, Any] = dict(
        n_experts=n_experts, n_active_experts=c["num_experts_per_tok"], router_score="softmax"
    )
    if model_type == "mixtral":
        return {**fields, "moe_d_ff": c["intermediate_size"], "router_renormalize": True}
    fields.update(
        moe_d_ff=c["moe_intermediate_size"],
        router_renormalize=bool(c["norm_topk_prob"]),
        moe_every=c["decoder_sparse_step"],
        moe_dense_layers=list(c["mlp_only_layers"]) or None,
    )
    if model_type == "qwen2_moe":
        fields.update(
            n_shared_experts=1,
            shared_expert_d_ff=c["shared_expert_intermediate_size"],
            shared_expert_gate=True,
        )
    return fields


def moe_mismatches(cfg: ModelConfig, model_type: str) -> list[str]:
    """What keeps ``cfg``'s MLPs from being ``model_type``'s (empty: they are)."""
    if model_type not in MOE_ARCHITECTURES:
        return [f"n_experts={cfg.n_experts} ({model_type} has no experts)"] if cfg.n_experts else []
    problems = [] if cfg.n_experts else [f"n_experts=0 ({model_type} is a mixture of experts)"]
    want: dict[str, Any] = dict(router_score="softmax")
    if model_type == "mixtral":
        want.update(router_renormalize=True, n_shared_experts=0, moe_first_dense=0, moe_every=1)
        want.update(moe_dense_layers=None)
    else:
        shared = model_type == "qwen2_moe"
        want.update(shared_expert_gate=shared)
        if not shared:
            want.update(n_shared_experts=0)
        elif not cfg.n_shared_experts:
            problems.append("n_shared_experts=0 (qwen2_moe has a shared expert)")
    problems += [f"{k}={getattr(cfg, k)!r} (needs {v!r})" for k, v in want.items() if getattr(cfg, k) != v]
    return problems


def moe_config_to_hf(cfg: ModelConfig, model_type: str) -> dict[str, Any]:
    """The config.json keys of ``model_type``'s experts (``{}`` for a dense family)."""
    if model_type not in MOE_ARCHITECTURES:
        return {}
    out: dict[str, Any] = dict(num_experts_per_tok=cfg.n_active_experts, router_aux_loss_coef=0.0)
    if model_type == "mixtral":
        return {**out, "num_local_experts": cfg.n_experts, "intermediate_size": cfg.moe_d_ff}
    dense = set(cfg.moe_dense_layers or ()) | set(range(cfg.moe_first_dense))
    out.update(
        num_experts=cfg.n_experts,
        moe_intermediate_size=cfg.moe_d_ff,
        norm_topk_prob=cfg.router_renormalize,
        decoder_sparse_step=cfg.moe_every,
        mlp_only_layers=sorted(i for i in dense if i < cfg.n_layers),
    )
    if model_type == "qwen2_moe":
        out.update(shared_expert_intermediate_size=cfg.shared_expert_d_ff, qkv_bias=cfg.qkv_bias)
    else:
        out.update(attention_bias=False)
    return out


def moe_names(
    model_type: str, cfg: ModelConfig, ours: str, theirs: str
) -> list[tuple[str, tuple[str, ...], bool]]:
    """One MoE layer's MLP tensors: (buildlm name, Hugging Face names, stacked) triples.

    ``ours``/``theirs`` are the block's name prefixes. Stacked: one Hugging Face tensor per
    expert, stacked along a new first dim (`hf_weights` makes it ``Link(..., stack=True)``).
    """
    mlp = theirs + ("block_sparse_moe." if model_type == "mixtral" else "mlp.")
    names = [(f"{ours}mlp.router.weight", (f"{mlp}gate.weight",), False)]
    for our_name, their_name in _EXPERT_NAMES[model_type]:
        experts = tuple(f"{mlp}experts.{e}.{their_name}.weight" for e in range(cfg.n_experts))
        names.append((f"{ours}mlp.experts.{our_name}", experts, True))
    if cfg.n_shared_experts:
        for a, b in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            names.append((f"{ours}mlp.shared.{a}.weight", (f"{mlp}shared_expert.{b}.weight",), False))
        if cfg.shared_expert_gate:
            names.append((f"{ours}mlp.shared_gate.weight", (f"{mlp}shared_expert_gate.weight",), False))
    return names
