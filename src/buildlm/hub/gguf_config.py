"""A Hugging Face ``config.json`` <-> the architecture metadata of a GGUF file.

GGUF describes the network with keys prefixed by its architecture name
(``general.architecture = "qwen3"``, then ``qwen3.block_count``, ``qwen3.attention.head_count``
...), the names llama.cpp's loader asks for. buildlm goes through the Hugging Face config it
already writes and reads (`hf_config`), so a GGUF file means exactly what the equal
Hugging Face folder means:

==========  ============  =====================================================================
HF family   GGUF arch     what llama.cpp computes with it
==========  ============  =====================================================================
gpt2        ``gpt2``      learned positions, LayerNorm, GELU (tanh), fused q/k/v
llama       ``llama``     RoPE on *adjacent pairs* (its "normal" mode): q/k rows are permuted
qwen2       ``qwen2``     RoPE on the two halves (NeoX mode, as buildlm): no permutation
qwen3       ``qwen3``     as qwen2, plus RMSNorm on each q/k head
mixtral     ``llama``     llama with ``expert_count`` experts in every layer (softmax router,
                          the top ``expert_used_count`` renormalised)
qwen3_moe   ``qwen3moe``  qwen3 with experts of ``expert_feed_forward_length`` in every layer
                          (renormalised top-k: llama.cpp always renormalises)
==========  ============  =====================================================================

Mistral without a sliding window is a Llama network and exports as ``llama``. Gemma 1/2/3,
OLMo 2, Qwen2-MoE, windowed Mistral and Llama 3 RoPE scaling: `gguf_families`. Not exported:
Qwen2/Qwen3 windows, and Qwen3-MoE with dense layers or without renormalisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from buildlm.hub.gguf_families import (
    FAMILY_ARCH,
    family_config_from_gguf,
    family_metadata,
    rope_scaling_metadata,
)

ARCH = {  # HF model_type -> GGUF architecture
    "gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
    "mixtral": "llama", "qwen3_moe": "qwen3moe", **FAMILY_ARCH,
}  # fmt: skip
# GGUF -> HF (a "llama" file with experts is a Mixtral, with a window a Mistral:
# `hf_config_from_gguf`)
MODEL_TYPE = {
    "gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe",
    **{arch: model_type for model_type, arch in FAMILY_ARCH.items() if arch != "llama"},
}  # fmt: skip


def gguf_metadata(hf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(arch, {key: value})`` for a Hugging Face config of a family in `ARCH`.

    Keys are written without the ``{arch}.`` prefix (``"block_count"``); the writer adds it.
    """
    arch = ARCH[hf["model_type"]]
    if arch == "gpt2":
        return arch, {
            "context_length": hf["n_positions"],
            "embedding_length": hf["n_embd"],
            "block_count": hf["n_layer"],
            "feed_forward_length": hf["n_inner"],
            "attention.head_count": hf["n_head"],
            "attention.layer_norm_epsilon": float(hf["layer_norm_epsilon"]),
        }
    extra = {}
    if hf.get("rope_scaling") is not None:
        if arch != "llama":
            raise ValueError(
                f"llama.cpp's {arch} architecture has no Llama 3 RoPE scaling; export this model "
                "with --to hf"
            )
        extra = rope_scaling_metadata(hf)  # (and the rope_freqs tensor: gguf_save)
    if hf.get("use_sliding_window") and hf.get("sliding_window") is not None:
        raise ValueError(
            f"llama.cpp's {arch} architecture has no sliding windows; export this model with --to hf"
        )
    moe = family_metadata(arch, hf)
    if hf["model_type"] == "qwen3_moe":
        if hf["mlp_only_layers"] or hf["decoder_sparse_step"] != 1 or not hf["norm_topk_prob"]:
            raise ValueError(
                "llama.cpp's qwen3moe has experts in every layer and renormalises the chosen "
                "experts' weights; this model does not (export it with --to hf)"
            )
        moe = {"expert_feed_forward_length": hf["moe_intermediate_size"]}
    if hf["model_type"] in ("mixtral", "qwen3_moe", "qwen2_moe"):
        moe.update(
            expert_count=hf.get("num_local_experts") or hf["num_experts"],
            expert_used_count=hf["num_experts_per_tok"],
        )
    return arch, {
        **moe,
        **extra,
        "context_length": hf["max_position_embeddings"],
        "embedding_length": hf["hidden_size"],
        "block_count": hf["num_hidden_layers"],
        "feed_forward_length": hf["intermediate_size"],
        "attention.head_count": hf["num_attention_heads"],
        "attention.head_count_kv": hf["num_key_value_heads"],
        "attention.key_length": hf["head_dim"],
        "attention.value_length": hf["head_dim"],
        "attention.layer_norm_rms_epsilon": float(hf["rms_norm_eps"]),
        "rope.freq_base": float(hf["rope_theta"]),
        "rope.dimension_count": hf["head_dim"],
    }


def hf_config_from_gguf(
    arch: str, meta: dict[str, Any], tensors: dict[str, tuple[int, ...]]
) -> dict[str, Any]:
    """A Hugging Face config dict from a GGUF file's metadata (keys without the arch prefix)
    and its tensor shapes (``name -> torch-order shape``), which say what the keys do not:
    the vocabulary size, a tied head (no ``output.weight``) and biases."""
    if arch not in MODEL_TYPE:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported; buildlm reads: {', '.join(MODEL_TYPE)}"
        )

    def need(key: str) -> Any:
        if key not in meta:
            raise ValueError(f"GGUF file lacks the metadata key {arch}.{key}")
        return _exact(meta[key])

    model_type = MODEL_TYPE[arch]
    if arch == "llama" and meta.get("expert_count"):
        model_type = "mixtral"
    hf: dict[str, Any] = {
        "model_type": model_type,
        "vocab_size": tensors["token_embd.weight"][0],
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    if arch == "gpt2":
        hf.update(
            n_positions=need("context_length"),
            n_embd=need("embedding_length"),
            n_layer=need("block_count"),
            n_head=need("attention.head_count"),
            n_inner=need("feed_forward_length"),
            layer_norm_epsilon=need("attention.layer_norm_epsilon"),
        )
        return hf
    n_heads = need("attention.head_count")
    hf.update(
        max_position_embeddings=need("context_length"),
        hidden_size=need("embedding_length"),
        num_hidden_layers=need("block_count"),
        intermediate_size=need("feed_forward_length"),
        num_attention_heads=n_heads,
        num_key_value_heads=meta.get("attention.head_count_kv", n_heads),
        head_dim=meta.get("attention.key_length", need("embedding_length") // n_heads),
        rms_norm_eps=need("attention.layer_norm_rms_epsilon"),
        rope_theta=_exact(meta.get("rope.freq_base", 10000.0)),
    )
    family_config_from_gguf(arch, meta, hf)
    model_type = hf["model_type"]
    if model_type == "llama":
        bias = "blk.0.attn_q.bias" in tensors
        hf.update(attention_bias=bias, mlp_bias=bias)
    if model_type in ("mixtral", "qwen3_moe", "qwen2_moe"):
        hf.update(num_experts_per_tok=need("expert_used_count"))
        hf["num_local_experts" if model_type == "mixtral" else "num_experts"] = need("expert_count")
    if model_type == "qwen2_moe":
        hf["qkv_bias"] = "blk.0.attn_q.bias" in tensors
    if model_type == "qwen3_moe":
        hf.update(
            moe_intermediate_size=need("expert_feed_forward_length"),
            norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        )  # fmt: skip
    return hf


def _exact(value: Any) -> Any:
    """A float32 value as the shortest decimal that rounds to it (``1e-05``, not
    ``9.999999747378752e-06``): GGUF stores floats in 32 bits, configs were written in decimal."""
    return float(str(np.float32(value))) if isinstance(value, float) else value
