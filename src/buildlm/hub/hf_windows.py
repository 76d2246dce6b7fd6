"""Sliding-window attention in Hugging Face ``config.json`` files, and the Mistral family.

Mistral is Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases) whose every layer
is local: it sees the last ``sliding_window`` positions (``null``: every layer global, then it
is a Llama). Qwen2 and Qwen3 can be windowed too: ``use_sliding_window`` switches
``sliding_window`` on, and ``layer_types`` (or, in files without it, ``max_window_layers``:
layers from that index on are local) says which layers. Llama has no windows.

In buildlm the same facts are two `ModelConfig` fields, ``sliding_window`` and
``layer_types`` (Hugging Face's own names), read and written here for `buildlm.hub.hf_config`.
"""

from __future__ import annotations

from typing import Any

from buildlm.model import ModelConfig

# transformers' MistralConfig defaults for the keys hf_config reads.
MISTRAL_DEFAULTS: dict[str, Any] = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
    max_position_embeddings=4096 * 32, rms_norm_eps=1e-6, initializer_range=0.02,
    tie_word_embeddings=False, rope_theta=10000.0, attention_bias=False, sliding_window=4096,
)  # fmt: skip

# Families whose files can describe local layers.
WINDOWED = ("mistral", "qwen2", "qwen3")


def windows_from_hf(model_type: str, hf: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """``sliding_window`` and ``layer_types`` for `ModelConfig` from a config.json.

    ``hf`` is the file as written (an explicit ``"sliding_window": null`` means "no window",
    not the family's default), ``c`` the same with the family's defaults filled in.
    """
    window = hf["sliding_window"] if "sliding_window" in hf else c.get("sliding_window")
    n_layers = c["num_hidden_layers"]
    if model_type == "mistral":  # every layer local; MistralForCausalLM ignores layer_types
        return dict(sliding_window=window, layer_types=None)
    layer_types = c.get("layer_types")
    if model_type not in WINDOWED or not c.get("use_sliding_window") or window is None:
        if layer_types and any(t != "full_attention" for t in layer_types):
            raise ValueError(
                f"config.json ({model_type}): layer_types {layer_types} name local layers, but "
                "no sliding window is switched on"
            )
        return dict(sliding_window=None, layer_types=None)
    if layer_types is None:  # older files: local from max_window_layers on
        first_local = c.get("max_window_layers", 28)
        layer_types = [
            "sliding_attention" if i >= first_local else "full_attention" for i in range(n_layers)
        ]
    return dict(sliding_window=int(window), layer_types=list(layer_types))


def window_mismatches(cfg: ModelConfig, model_type: str) -> list[str]:
    """What in ``cfg``'s windows keeps it from being a ``model_type`` network (empty: nothing)."""
    local = [t == "sliding_attention" for t in cfg.layer_types]
    problems = []
    if cfg.rope_local_theta is not None:
        problems.append(f"rope_local_theta={cfg.rope_local_theta} (one RoPE base for all layers)")
    if model_type == "mistral":
        if any(local) and not all(local):
            problems.append("layer_types mixes local and global layers (Mistral: all or none)")
    elif any(local) and model_type not in WINDOWED:
        problems.append(f"sliding_window={cfg.sliding_window} ({model_type} has no local layers)")
    return problems


def windows_to_hf(cfg: ModelConfig, model_type: str) -> dict[str, Any]:
    """The config.json keys that describe ``cfg``'s windows to a ``model_type`` network."""
    local = "sliding_attention" in cfg.layer_types
    if model_type == "mistral":
        return dict(sliding_window=cfg.sliding_window if local else None)
    if model_type not in WINDOWED:
        return {}
    first_local = cfg.layer_types.index("sliding_attention") if local else cfg.n_layers
    return dict(
        use_sliding_window=local,
        sliding_window=cfg.sliding_window if local else None,
        max_window_layers=first_local,
        layer_types=list(cfg.layer_types),
    )
