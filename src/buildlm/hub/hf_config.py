"""Hugging Face ``config.json`` <-> `ModelConfig`.

A Hugging Face model folder describes its network in ``config.json``, with names that differ by
family (GPT-2 says ``n_embd``, Llama says ``hidden_size``). Each family maps onto buildlm's
switches:

==========  ========  =======  ======  ==========================================  =======
family      position  norm     MLP     attention                                   head
==========  ========  =======  ======  ==========================================  =======
gpt2        learned   Layer    GELU    multi-head, biases everywhere               tied
llama       RoPE      RMS      SwiGLU  grouped-query, no biases                    either
qwen2       RoPE      RMS      SwiGLU  grouped-query, biases on q/k/v only         either
qwen3       RoPE      RMS      SwiGLU  grouped-query, RMSNorm on each q/k head     either
mistral     RoPE      RMS      SwiGLU  grouped-query, every layer sliding-window   either
==========  ========  =======  ======  ==========================================  =======

Mixtral, Qwen2-MoE and Qwen3-MoE are Llama, Qwen2 and Qwen3 with mixture-of-experts MLPs; their
expert settings are read and written by ``hf_moe.py``.

Sliding windows (Mistral's, Mixtral's, and Qwen2/Qwen3's ``use_sliding_window``) are read and written by
`buildlm.hub.hf_windows`.

Gemma (1, 2 and 3) and OLMo 2 are Llama networks with block details switched on; their part of the
mapping is in `hf_gemma_olmo`.

A key missing from ``config.json`` takes the default transformers gives it for that family (old
GPT-2 configs omit ``tie_word_embeddings``, for instance). A setting buildlm cannot reproduce
(another activation, a RoPE scaling other than Llama 3's) raises
``ValueError``: loading it anyway would give a model that silently computes something else.
Dropout rates are training settings, not architecture; a loaded model gets ``dropout=0``.
A size a file leaves out or sets to ``null`` (``num_key_value_heads``, ``n_inner``,
``head_dim``) is buildlm's automatic one, which `ModelConfig` resolves to a number, so equal
networks get equal configs however the file spells them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from buildlm.device import DTYPES
from buildlm.hub import hf_gemma_olmo
from buildlm.hub.hf_moe import (
    MOE_ARCHITECTURES,
    MOE_DEFAULTS,
    moe_config_to_hf,
    moe_fields_from_hf,
    moe_mismatches,
)
from buildlm.hub.hf_windows import (
    MISTRAL_DEFAULTS,
    window_mismatches,
    windows_from_hf,
    windows_to_hf,
)
from buildlm.model import ModelConfig

ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
    **MOE_ARCHITECTURES,  # mixtral, qwen2_moe, qwen3_moe: see hf_moe.py
    **hf_gemma_olmo.ARCHITECTURES,
}
SUPPORTED = tuple(ARCHITECTURES)

# transformers' defaults for the keys read here (GPT2Config, LlamaConfig, Qwen2Config, ...).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": dict(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, initializer_range=0.02,
        tie_word_embeddings=True, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
        add_cross_attention=False,
    ),
    "llama": dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
        max_position_embeddings=2048, rms_norm_eps=1e-6, initializer_range=0.02,
        tie_word_embeddings=False, rope_theta=10000.0, attention_bias=False, mlp_bias=False,
    ),
    "qwen2": dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, head_dim=None, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-6, initializer_range=0.02,
        tie_word_embeddings=False, rope_theta=10000.0, use_sliding_window=False,
    ),
    "qwen3": dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, head_dim=128, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-6, initializer_range=0.02,
        tie_word_embeddings=False, rope_theta=10000.0, attention_bias=False,
        use_sliding_window=False,
    ),
    "mistral": MISTRAL_DEFAULTS,
    **MOE_DEFAULTS,
    **hf_gemma_olmo.DEFAULTS,
}  # fmt: skip

_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # all GELU's tanh approximation
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def read_hf_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a Hugging Face model folder."""
    path = Path(folder) / "config.json"
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} not found")
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} not found; a Hugging Face model folder holds config.json beside its "
            "weights"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} is not a JSON object")
    return config


def model_type_of(hf: dict[str, Any]) -> str:
    """The ``model_type`` of a config.json, checked against the families buildlm supports."""
    model_type = hf.get("model_type")
    if model_type is None and isinstance(hf.get("model"), dict):
        raise ValueError(
            "this config.json is a buildlm checkpoint's, not a Hugging Face one: load it with "
            "buildlm.checkpoint_format.load_checkpoint, or export it with `buildlm convert --to hf`"
        )
    if model_type not in SUPPORTED:
        raise ValueError(
            f"unsupported model_type {model_type!r} in config.json; buildlm loads: "
            f"{', '.join(SUPPORTED)}"
        )
    return model_type


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """The `ModelConfig` of a Hugging Face ``config.json`` (already parsed)."""
    model_type = model_type_of(hf)
    c = {**_DEFAULTS[model_type], **{k: v for k, v in hf.items() if v is not None}}
    if hf.get("num_key_value_heads", 0) is None:  # an explicit null means "one per head"
        c["num_key_value_heads"] = None
    if hf.get("head_dim", 0) is None:
        c["head_dim"] = None
    for key in hf_gemma_olmo.NULL_MEANS_OFF:  # an explicit null switches these off
        if key in hf and hf[key] is None:
            c[key] = None
    if model_type == "gpt2":
        return _gpt2_from_hf(c)
    if model_type in hf_gemma_olmo.FAMILIES:
        windows = hf_gemma_olmo.windows_from_hf(model_type, c)
    else:
        windows = windows_from_hf(model_type, hf, c)
    return _llama_like_from_hf(model_type, c, windows)


def _unsupported(model_type: str, what: str) -> ValueError:
    return ValueError(f"config.json ({model_type}): {what} is not supported by buildlm")


def _gpt2_from_hf(c: dict[str, Any]) -> ModelConfig:
    if c["activation_function"] not in _GELU_TANH:
        raise _unsupported("gpt2", f"activation_function={c['activation_function']!r}")
    for key, ok in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if c[key] != ok:
            raise _unsupported("gpt2", f"{key}={c[key]!r}")
    return ModelConfig(
        vocab_size=c["vocab_size"],
        context_length=c["n_positions"],
        d_model=c["n_embd"],
        n_layers=c["n_layer"],
        n_heads=c["n_head"],
        d_ff=c["n_inner"],
        bias=True,
        norm="layernorm",
        norm_eps=float(c["layer_norm_epsilon"]),
        position="learned",
        mlp="gelu",
        tie_embeddings=bool(c["tie_word_embeddings"]),
        init_std=float(c["initializer_range"]),
    )


def _llama_like_from_hf(
    model_type: str, c: dict[str, Any], windows: dict[str, Any]
) -> ModelConfig:
    block: dict[str, Any] = dict(mlp="swiglu", qk_norm=model_type in ("qwen3", "qwen3_moe"))
    if model_type in hf_gemma_olmo.FAMILIES:
        block.update(hf_gemma_olmo.block_from_hf(model_type, c))
    elif c["hidden_act"] != "silu":
        raise _unsupported(model_type, f"hidden_act={c['hidden_act']!r} (only 'silu', SwiGLU)")
    bias, qkv_bias = False, block.pop("qkv_bias", None)
    if model_type == "qwen2":
        qkv_bias = True  # Qwen2 always has q/k/v biases, and no other bias
    elif model_type == "qwen2_moe":
        qkv_bias = bool(c["qkv_bias"])
    elif model_type == "llama":
        if c["attention_bias"] != c["mlp_bias"]:
            raise _unsupported(
                model_type,
                f"attention_bias={c['attention_bias']} with mlp_bias={c['mlp_bias']} "
                "(buildlm's bias switch covers both)",
            )
        bias = bool(c["attention_bias"])
    elif c.get("attention_bias"):  # qwen3: attention biases but never MLP biases
        raise _unsupported(model_type, "attention_bias=true")
    theta, scaling = _rope_from_hf(model_type, c)
    return ModelConfig(
        vocab_size=c["vocab_size"],
        context_length=c["max_position_embeddings"],
        d_model=c["hidden_size"],
        n_layers=c["num_hidden_layers"],
        n_heads=c["num_attention_heads"],
        n_kv_heads=c["num_key_value_heads"],
        d_ff=c["intermediate_size"],
        head_dim=c["head_dim"],
        bias=bias,
        qkv_bias=qkv_bias,
        norm="rmsnorm",
        norm_eps=float(c["rms_norm_eps"]),
        position="rope",
        rope_theta=theta,
        rope_scaling=scaling,
        tie_embeddings=bool(c["tie_word_embeddings"]),
        init_std=float(c["initializer_range"]),
        **block,
        **windows,
        **moe_fields_from_hf(model_type, c),
    )


def _rope_from_hf(model_type: str, c: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """``(rope_theta, rope_scaling)`` from either way transformers has written RoPE settings.

    transformers 4.x: top-level ``rope_theta`` and ``rope_scaling`` (``{"rope_type": "llama3",
    ...}``, or ``"type"`` in older files). transformers 5.x: one ``rope_parameters`` dict that
    holds ``rope_theta`` and ``rope_type`` (``"default"`` for plain RoPE) with the scaling keys.
    """
    params = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise _unsupported(model_type, f"rope settings {params!r}")
    theta = float(params.get("rope_theta", c["rope_theta"]))
    kind = params.get("rope_type", params.get("type", "default"))
    known = {"rope_type", "type", "rope_theta"}
    if kind == "default":
        scaling = None
    elif kind == "llama3":
        missing = [k for k in _LLAMA3_KEYS if k not in params]
        if missing:
            raise ValueError(f"config.json ({model_type}): llama3 rope scaling lacks {missing}")
        known |= set(_LLAMA3_KEYS)
        scaling = {
            "type": "llama3",
            "factor": float(params["factor"]),
            "low_freq_factor": float(params["low_freq_factor"]),
            "high_freq_factor": float(params["high_freq_factor"]),
            "original_context_length": int(params["original_max_position_embeddings"]),
        }
    else:
        raise _unsupported(model_type, f"rope scaling type {kind!r} (supported: default, llama3)")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise _unsupported(model_type, f"partial_rotary_factor={params['partial_rotary_factor']}")
    unknown = sorted(set(params) - known - {"partial_rotary_factor"})
    if unknown:
        raise _unsupported(model_type, f"rope setting(s) {unknown} for rope type {kind!r}")
    return theta, scaling


# --- buildlm -> Hugging Face ------------------------------------------------------------------


def _mismatches(cfg: ModelConfig, model_type: str) -> list[str]:
    """What keeps ``cfg`` from being a ``model_type`` network (empty: it is one)."""
    if model_type in hf_gemma_olmo.FAMILIES:
        want = dict(hf_gemma_olmo.WANT[model_type])
    else:
        want = {**hf_gemma_olmo.PLAIN_BLOCK, **_plain_want(model_type)}
    problems = [
        f"{k}={getattr(cfg, k)!r} (needs {v!r})" for k, v in want.items() if getattr(cfg, k) != v
    ]
    if model_type == "gpt2" and cfg.n_kv_heads != cfg.n_heads:
        problems.append(f"n_kv_heads={cfg.n_kv_heads} (GPT-2 has one key/value head per head)")
    if model_type == "gpt2" and cfg.head_dim * cfg.n_heads != cfg.d_model:
        problems.append(f"head_dim={cfg.head_dim} (GPT-2's heads split d_model={cfg.d_model})")
    if model_type in ("gpt2", "llama", "qwen3", "mistral", "mixtral", "qwen3_moe") and (
        cfg.qkv_bias != cfg.bias
    ):
        problems.append(f"qkv_bias={cfg.qkv_bias} differs from bias={cfg.bias}")
    windows = (
        hf_gemma_olmo.window_mismatches
        if model_type in hf_gemma_olmo.FAMILIES
        else window_mismatches
    )
    return problems + moe_mismatches(cfg, model_type) + windows(cfg, model_type)


def _plain_want(model_type: str) -> dict[str, Any]:
    """The switches that make a GPT-2, Llama, Qwen2, Qwen3, Mistral or mixture-of-experts network."""
    llama_like = dict(position="rope", norm="rmsnorm", mlp="swiglu")
    return {
        "gpt2": dict(
            position="learned", norm="layernorm", mlp="gelu", bias=True, qk_norm=False,
            rope_scaling=None,
        ),
        "llama": dict(**llama_like, qk_norm=False),
        "qwen2": dict(**llama_like, qk_norm=False, bias=False, qkv_bias=True),
        "qwen3": dict(**llama_like, qk_norm=True, bias=False),
        "mistral": dict(**llama_like, qk_norm=False, bias=False),
        "mixtral": dict(**llama_like, qk_norm=False, bias=False),
        "qwen2_moe": dict(**llama_like, qk_norm=False, bias=False),
        "qwen3_moe": dict(**llama_like, qk_norm=True, bias=False),
    }[model_type]  # fmt: skip


# The squared-ReLU MLP (mlp="relu2") is in none of the families above (GELU or gated MLPs).
# transformers' Nemotron and Arcee have it, but buildlm does not map those families.
NO_RELU2_EXPORT = (
    "mlp='relu2' (the squared-ReLU MLP) has no {fmt} export: buildlm exports GPT-2, Llama, "
    "Qwen, Mistral, Gemma and OLMo networks, whose MLPs are GELU or gated; keep the buildlm "
    "checkpoint, or train with --model.mlp gelu or swiglu to export"
)


def hf_model_type(cfg: ModelConfig, model_type: str | None = None) -> str:
    """The Hugging Face family that computes exactly what ``cfg`` computes.

    With ``model_type`` given, check that it does; otherwise pick the one that fits.
    """
    if cfg.mlp == "relu2":
        raise ValueError(NO_RELU2_EXPORT.format(fmt="Hugging Face"))
    if model_type is not None:
        if model_type not in SUPPORTED:
            raise ValueError(
                f"unsupported model_type {model_type!r}; choose one of: {', '.join(SUPPORTED)}"
            )
        problems = _mismatches(cfg, model_type)
        if problems:
            raise ValueError(f"this model is not a {model_type} network: {'; '.join(problems)}")
        return model_type
    for candidate in SUPPORTED:
        if not _mismatches(cfg, candidate):
            return candidate
    raise ValueError(
        "no Hugging Face architecture computes this model: "
        + " | ".join(f"{t}: {'; '.join(_mismatches(cfg, t))}" for t in SUPPORTED)
    )


def hf_dtype_name(dtype: torch.dtype) -> str:
    """How a Hugging Face ``config.json`` names ``dtype`` (its ``torch_dtype``): torch's own
    name, ``"bfloat16"`` where buildlm says ``"bf16"``."""
    return str(dtype).removeprefix("torch.")


def parse_hf_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """A dtype named as buildlm names it (``"bf16"``, `buildlm.device.DTYPES`) or as Hugging Face
    and torch do (``"bfloat16"``, ``"torch.bfloat16"``); a torch dtype or None passes through."""
    if name is None or isinstance(name, torch.dtype):
        return name
    hf_names = {hf_dtype_name(dtype): dtype for dtype in DTYPES.values()}
    dtype = DTYPES.get(name) or hf_names.get(str(name).removeprefix("torch."))
    if dtype is None:
        raise ValueError(f"unknown dtype {name!r}; use {', '.join(DTYPES)} (or {', '.join(hf_names)})")
    return dtype


def config_to_hf(
    cfg: ModelConfig,
    model_type: str | None = None,
    dtype: str = "float32",
    eos_token_id: int | None = None,
) -> dict[str, Any]:
    """A ``config.json`` that makes ``transformers`` build the network ``cfg`` describes."""
    model_type = hf_model_type(cfg, model_type)
    out: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [ARCHITECTURES[model_type]],
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "dtype": dtype,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": None,
    }
    if model_type == "gpt2":
        out.update(
            n_positions=cfg.context_length,
            n_ctx=cfg.context_length,
            n_embd=cfg.d_model,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.d_ff,
            activation_function="gelu_new",
            layer_norm_epsilon=cfg.norm_eps,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            scale_attn_weights=True,
        )
        return out
    rope_type = "default" if cfg.rope_scaling is None else cfg.rope_scaling["type"]
    scaling: dict[str, Any] = {"rope_type": rope_type}
    if cfg.rope_scaling is not None:
        scaling.update(
            factor=cfg.rope_scaling["factor"],
            low_freq_factor=cfg.rope_scaling["low_freq_factor"],
            high_freq_factor=cfg.rope_scaling["high_freq_factor"],
            original_max_position_embeddings=cfg.rope_scaling["original_context_length"],
        )
    out.update(
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.context_length,
        rms_norm_eps=cfg.norm_eps,
        attention_dropout=cfg.dropout,
        # transformers 5 reads rope_parameters; 4.x reads rope_theta and rope_scaling.
        rope_parameters={**scaling, "rope_theta": cfg.rope_theta},
        rope_theta=cfg.rope_theta,
        rope_scaling=None if cfg.rope_scaling is None else scaling,
    )
    if model_type in hf_gemma_olmo.FAMILIES:
        out.update(hf_gemma_olmo.block_to_hf(model_type, cfg))
    elif model_type == "llama":
        out.update(attention_bias=cfg.bias, mlp_bias=cfg.bias)
    elif model_type == "qwen3":
        out.update(attention_bias=False)
    out.update(windows_to_hf(cfg, model_type))
    out.update(moe_config_to_hf(cfg, model_type))
    return out
