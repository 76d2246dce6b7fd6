"""GGUF metadata of the families whose blocks differ from Llama's: Gemma 1/2/3, OLMo 2,
Qwen2-MoE, windowed Mistral, and Llama 3's RoPE scaling.

llama.cpp builds each architecture's graph in its own code, with some settings read from the
file and others fixed by the architecture. An export is only exact where the fixed ones are
the model's, so each family comes with what it must hold, checked before writing:

=========  =========  ====================================================================
HF family  GGUF arch  llama.cpp computes / fixes
=========  =========  ====================================================================
gemma      gemma      embeddings x sqrt(d), GeGLU, queries scaled by 1/sqrt(head_dim);
                      output head = token embedding (tied only)
gemma2     gemma2     as gemma, sandwich norms; ``attn_logit_softcapping`` and
                      ``final_logit_softcapping`` always applied (both needed);
                      ``sliding_window``, and a local/global *period* p (layer i is local
                      when i % p < p - 1: Gemma 2's p = 2, Gemma 3's p = 6); query scale
                      1/sqrt(head_dim) (1/sqrt(d / heads) for the 46-layer 27B)
gemma3     gemma3     as gemma2 without the attention cap, with q/k RMSNorm, another RoPE base
                      for local layers (``rope.freq_base_swa``); 62-layer 27B as above
olmo2      olmo2      norms after attention and MLP, RMSNorm over all of q and k; an output
                      head of its own (a tied model writes a copy of its embedding)
qwen2_moe  qwen2moe   experts in every layer, *not* renormalised, and a shared expert scaled by
                      sigmoid(w . x) (``ffn_gate_inp_shexp``); an output head of its own
mistral    llama      the window only where it reaches the whole context (llama.cpp's llama
                      has no windows): every query then sees every earlier position anyway
=========  =========  ====================================================================

Gemma's RMSNorm multiplies by (1 + w): llama.cpp's converter stores 1 + w, and so does buildlm
(`gguf_tensors`), so llama.cpp multiplies by the stored weight.

Llama 3's RoPE scaling divides each rotation frequency by a factor (1 for fast rotations, the
scaling ``factor`` for slow ones, a blend between): llama.cpp reads those factors as one
tensor, ``rope_freqs.weight`` (`llama3_rope_factors`). The four settings they come from are also
written, as ``buildlm.rope_scaling.*`` keys llama.cpp ignores, so the file reads back to the same
config; a file without them (llama.cpp's converter writes none) is matched against Llama 3.1's
and 3.2's settings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

FAMILY_ARCH = {
    "gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3", "olmo2": "olmo2",
    "qwen2_moe": "qwen2moe", "mistral": "llama",
}  # fmt: skip
GEMMA = ("gemma", "gemma2", "gemma3")
OWN_HEAD = ("olmo2", "qwen2moe")  # llama.cpp requires output.weight
_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
# (factor, low_freq_factor, high_freq_factor, original context) of Llama 3.1 and Llama 3.2
_KNOWN_LLAMA3 = ((8.0, 1.0, 4.0, 8192), (32.0, 1.0, 4.0, 8192))
_BIG_LAYERS = {"gemma2": 46, "gemma3": 62}  # the 27B models: queries scaled by 1/sqrt(d / heads)


def _refuse(arch: str, what: str) -> ValueError:
    return ValueError(f"llama.cpp's {arch} architecture {what}; export this model with --to hf")


def _f32(value: float) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (as `gguf_config`)."""
    return float(str(np.float32(value)))


def swa_period(layer_types: list[str]) -> int | None:
    """The llama.cpp period p whose pattern (layer i local when i % p < p - 1; p = 0: all local)
    is ``layer_types``; None if no period gives it."""
    local = [t == "sliding_attention" for t in layer_types]
    for p in range(len(local) + 2):
        if all((p == 0 or i % p < p - 1) == is_local for i, is_local in enumerate(local)):
            return p
    return None


def layer_types_from_period(p: int, n_layers: int) -> list[str]:
    return [
        "sliding_attention" if p == 0 or i % p < p - 1 else "full_attention" for i in range(n_layers)
    ]


def family_metadata(arch: str, hf: dict[str, Any]) -> dict[str, Any]:
    """The extra GGUF keys of ``hf``'s family (keys without the ``{arch}.`` prefix); raises
    ValueError for what llama.cpp's ``arch`` would compute differently."""
    model_type = hf["model_type"]
    meta: dict[str, Any] = {}
    if arch in GEMMA and not hf["tie_word_embeddings"]:
        raise _refuse(arch, "reuses the token embedding as the output head (this model is untied)")
    if arch in ("gemma2", "gemma3"):
        want = hf["head_dim"]
        if hf["num_hidden_layers"] == _BIG_LAYERS[arch]:
            want = hf["hidden_size"] // hf["num_attention_heads"]
        if float(hf["query_pre_attn_scalar"]) != float(want):
            raise _refuse(
                arch, f"scales queries by 1/sqrt({want}) for this size; query_pre_attn_scalar="
                f"{hf['query_pre_attn_scalar']}",
            )  # fmt: skip
        final = hf["final_logit_softcapping"]
        if arch == "gemma2":
            if hf["attn_logit_softcapping"] is None or final is None:
                raise _refuse(arch, "always caps attention and final logits (this model does not)")
            meta["attn_logit_softcapping"] = float(hf["attn_logit_softcapping"])
        if final is not None:
            meta["final_logit_softcapping"] = float(final)
        period = swa_period(hf["layer_types"])
        if period is None:
            raise _refuse(arch, f"repeats local/global layers with a period; not {hf['layer_types']}")
        meta["attention.sliding_window"] = int(hf["sliding_window"])
        meta["attention.sliding_window_pattern"] = period
        local = hf["rope_parameters"]["sliding_attention"]["rope_theta"] if arch == "gemma3" else None
        meta["rope.freq_base_swa"] = float(local if local is not None else hf["rope_theta"])
    if arch == "olmo2" and hf["head_dim"] * hf["num_attention_heads"] != hf["hidden_size"]:
        raise _refuse(arch, "needs head_dim x n_heads == d_model")
    if model_type == "qwen2_moe":
        if hf["mlp_only_layers"] or hf["decoder_sparse_step"] != 1 or hf["norm_topk_prob"]:
            raise _refuse(
                arch, "has experts in every layer and does not renormalise the chosen experts' "
                "weights (this model differs)",
            )  # fmt: skip
        meta.update(
            expert_feed_forward_length=hf["moe_intermediate_size"],
            expert_shared_feed_forward_length=hf["shared_expert_intermediate_size"],
        )
    if model_type in ("mistral", "mixtral") and hf.get("sliding_window") is not None:
        if hf["sliding_window"] < hf["max_position_embeddings"]:
            raise _refuse(
                arch, f"has no sliding window, and this one ({hf['sliding_window']}) is shorter "
                f"than the context ({hf['max_position_embeddings']})",
            )  # fmt: skip
        meta["attention.sliding_window"] = int(hf["sliding_window"])
    return meta


def family_config_from_gguf(arch: str, meta: dict[str, Any], hf: dict[str, Any]) -> None:
    """Fill in ``hf`` (the Llama-like config `gguf_config` read) with ``arch``'s own keys."""
    if arch in GEMMA:
        hf.update(hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh")
    if arch in ("gemma2", "gemma3"):
        n, scalar = hf["num_hidden_layers"], hf["head_dim"]
        if n == _BIG_LAYERS[arch]:
            scalar = hf["hidden_size"] // hf["num_attention_heads"]
        period = meta.get("attention.sliding_window_pattern", 2 if arch == "gemma2" else 6)
        if isinstance(period, list):  # one flag per layer (true: local), as newer files write
            types = ["sliding_attention" if f else "full_attention" for f in period]
        else:
            types = layer_types_from_period(int(period), n)
        window = meta.get("attention.sliding_window", 4096)
        final = meta.get("final_logit_softcapping", 30.0 if arch == "gemma2" else None)
        hf.update(
            query_pre_attn_scalar=scalar,
            attn_logit_softcapping=None if arch == "gemma3" else _f32(meta.get("attn_logit_softcapping", 50.0)),
            final_logit_softcapping=None if final is None else _f32(final),
            layer_types=types,
            sliding_window=window if "sliding_attention" in types and window else None,
        )  # fmt: skip
        local = meta.get("rope.freq_base_swa", hf["rope_theta"])
        if arch == "gemma2" and np.float32(local) != np.float32(hf["rope_theta"]):
            raise ValueError("a gemma2 file with its own RoPE base for local layers is not supported")
        if arch == "gemma3":
            local = _f32(meta.get("rope.freq_base_swa", 10000.0))
            hf["rope_parameters"] = {
                "full_attention": {"rope_type": "default", "rope_theta": hf["rope_theta"]},
                "sliding_attention": {"rope_type": "default", "rope_theta": local},
            }
    if arch == "llama" and meta.get("attention.sliding_window") and not meta.get("expert_count"):
        hf.update(model_type="mistral", sliding_window=meta["attention.sliding_window"])
    elif arch == "llama" and meta.get("attention.sliding_window"):
        hf["sliding_window"] = meta["attention.sliding_window"]
    if arch == "qwen2moe":
        hf.update(
            moe_intermediate_size=meta["expert_feed_forward_length"],
            shared_expert_intermediate_size=meta["expert_shared_feed_forward_length"],
            norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[],
        )  # fmt: skip


def llama3_rope_factors(theta: float, head_dim: int, scaling: dict[str, Any]) -> torch.Tensor:
    """The ``rope_freqs`` tensor for Llama 3 RoPE scaling: one divisor per frequency, (head_dim/2,).

    A rotation whose wavelength is shorter than ``original / high_freq_factor`` keeps its
    frequency (divisor 1); one longer than ``original / low_freq_factor`` is slowed ``factor``
    times; in between the frequency is a blend, (1 - s) / factor + s of itself, with s going
    linearly in original / wavelength from 0 to 1.
    """
    factor, low, high = (float(scaling[k]) for k in _SCALING_KEYS[:3])
    original = float(scaling["original_max_position_embeddings"])
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < original / high:
            out.append(1.0)
        elif wavelen > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32)


def rope_scaling_metadata(hf: dict[str, Any]) -> dict[str, Any]:
    """The ``buildlm.rope_scaling.*`` keys (full names) of a Llama 3-scaled config."""
    scaling = hf["rope_scaling"]
    return {f"buildlm.rope_scaling.{k}": scaling[k] for k in _SCALING_KEYS}


def rope_scaling_from_gguf(
    meta: dict[str, Any], factors: torch.Tensor, theta: float, head_dim: int
) -> dict[str, Any]:
    """The Llama 3 ``rope_scaling`` of a file with a ``rope_freqs`` tensor (``meta``: all keys)."""
    if all(f"buildlm.rope_scaling.{k}" in meta for k in _SCALING_KEYS):
        found = [meta[f"buildlm.rope_scaling.{k}"] for k in _SCALING_KEYS]
        candidates = [tuple(found)]
    else:
        candidates = list(_KNOWN_LLAMA3)
    for values in candidates:
        scaling = {"rope_type": "llama3", **dict(zip(_SCALING_KEYS, values, strict=True))}
        if torch.allclose(llama3_rope_factors(theta, head_dim, scaling), factors, rtol=1e-5):
            scaling["original_max_position_embeddings"] = int(values[3])
            return scaling
    raise ValueError(
        "the file's rope_freqs tensor is not Llama 3 RoPE scaling with settings buildlm knows "
        "(Llama 3.1's or 3.2's, or buildlm.rope_scaling.* keys)"
    )
