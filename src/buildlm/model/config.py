"""ModelConfig: every architectural choice of the network, in one dataclass.

One `GPT` class covers GPT-2 and Llama/Qwen-style networks: the differences between those
families are a handful of switches (which norm, where it sits, how positions enter, which MLP,
how many key/value heads, biases or not, tied head or not). Keeping them as plain fields makes
the differences visible in one place and lets a checkpoint's ``config.json`` rebuild the exact
network with ``ModelConfig.from_dict``.

Presets name well-known shapes (``gpt2-124m`` ... ``gpt2-1558m``) and CPU-friendly sizes
(``tiny`` ~1M and ``small`` ~10M parameters, ``llama-small``, the mixture of experts
``moe-small``) for learning on a laptop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "sinusoidal", "rope")
MLPS = ("gelu", "swiglu", "geglu", "relu2")
NORM_PLACEMENTS = ("pre", "post", "branch_post", "sandwich")
QK_NORM_SCOPES = ("head", "all")
ATTENTIONS = ("sdpa", "manual")
ROUTER_SCORES = ("softmax", "sigmoid")  # how a mixture-of-experts router scores its experts
LAYER_TYPES = ("full_attention", "sliding_attention")  # Hugging Face's names
# The sizes that may be given as None (automatic) and are resolved in __post_init__.
AUTOMATIC_SIZES = ("n_kv_heads", "d_ff", "head_dim")
# Fields that config.json files written by older versions spell differently: old -> new.
RENAMED_FIELDS = {"d_head": "head_dim"}
# RoPE frequency scalings and the parameters each one takes (see position.rope_frequency_scaling).
ROPE_SCALINGS: dict[str, tuple[str, ...]] = {
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_context_length"),
}


def swiglu_hidden_size(d_model: int, multiple_of: int = 256) -> int:
    """The Llama rule for the SwiGLU hidden width.

    A GELU MLP has two matrices of size d_model x 4*d_model. SwiGLU has three, so Llama shrinks
    the hidden width to 2/3 of 4*d_model to keep the parameter count about the same, then rounds
    up to a multiple of 256 so the matmuls tile well on hardware.
    """
    hidden = int(2 * (4 * d_model) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def _gpt2(d_model: int, n_layers: int, n_heads: int) -> dict[str, Any]:
    return dict(
        vocab_size=50257,
        context_length=1024,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        bias=True,
        norm="layernorm",
        norm_eps=1e-5,
        position="learned",
        mlp="gelu",
        tie_embeddings=True,
    )


PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-124m": _gpt2(768, 12, 12),
    "gpt2-355m": _gpt2(1024, 24, 16),
    "gpt2-774m": _gpt2(1280, 36, 20),
    "gpt2-1558m": _gpt2(1600, 48, 25),
    # ~1M parameters: trains in minutes on a laptop CPU (GPT-2 architecture, small vocabulary).
    "tiny": dict(
        vocab_size=1024, context_length=256, d_model=128, n_layers=4, n_heads=4, bias=True
    ),
    # ~10M non-embedding parameters: Shakespeare-sized experiments on CPU.
    "small": dict(
        vocab_size=2048, context_length=256, d_model=384, n_layers=6, n_heads=6, bias=True
    ),
    # A Llama-style network: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases, untied.
    "llama-small": dict(
        vocab_size=32000,
        context_length=1024,
        d_model=512,
        n_layers=8,
        n_heads=8,
        n_kv_heads=2,
        bias=False,
        norm="rmsnorm",
        norm_eps=1e-5,
        position="rope",
        rope_theta=10000.0,
        mlp="swiglu",
        tie_embeddings=False,
    ),
    # The main job's model (`buildlm train`, configs/shakespeare-small.yaml): tiny's size in the
    # Qwen3 style, each choice measured for a five-minute CPU run (benchmarks/time_to_loss.py):
    # RoPE, RMSNorm, a SwiGLU MLP of width 3 x d_model (GELU's parameter count), QK-norm, no
    # biases, an untied head. d_ff is a number here: give a new one with a new d_model.
    "qwen3-tiny": dict(
        vocab_size=1024, context_length=256, d_model=128, n_layers=4, n_heads=4, d_ff=384,
        bias=False, norm="rmsnorm", position="rope", mlp="swiglu", qk_norm=True, tie_embeddings=False,
    ),
}
# A small mixture of experts (Qwen3-MoE/Mixtral style): llama-small's kind of layers, smaller,
# with 8 SwiGLU experts of width 256 in every MLP, 2 active per token (renormalised weights).
# ~7.1M non-embedding parameters in all, ~2.4M of them active per token.
PRESETS["moe-small"] = {
    **PRESETS["llama-small"],
    **dict(vocab_size=2048, context_length=256, d_model=256, n_layers=4, n_heads=4),
    **dict(tie_embeddings=True, n_experts=8, n_active_experts=2, moe_d_ff=256),
}


@dataclass
class ModelConfig:
    """The shape and the architectural switches of a decoder-only transformer.

    Four settings may be left as ``None`` ("automatic") and are resolved once, in
    ``__post_init__``: after construction each holds the value the network uses, so code reads
    ``config.n_kv_heads`` and never has to ask what ``None`` meant, and two configs that
    describe the same network compare equal however they were spelled.

    ``n_kv_heads`` (None: n_heads, one key/value head per query head, ordinary multi-head
    attention); fewer key/value heads give grouped-query attention (GQA), one gives multi-query
    attention.
    ``d_ff``: hidden width of the MLP (None: 4*d_model for GELU and ReLU², the Llama rule for
    SwiGLU and GeGLU).
    ``head_dim``: dimensions per attention head (None: d_model/n_heads); a checkpoint may choose
    another width (Qwen3-0.6B: d_model=1024, 16 heads of 128), and attention then works in
    n_heads*head_dim dimensions before ``proj`` maps back to d_model.
    ``bias`` switches the biases of every Linear and LayerNorm; ``qkv_bias`` (None: follow
    ``bias``) overrides it for the query/key/value projection alone (Qwen2 has biases there and
    nowhere else).
    ``rope_scaling`` stretches RoPE to longer contexts than the model was trained on, as Llama
    3.1/3.2 do: ``{"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_context_length": 8192}``. ``None``: plain RoPE.
    ``dropout`` is used on the embeddings, on the attention weights and on each residual branch.
    ``attention="manual"`` runs the explicit softmax(QK^T/sqrt(d))V code (slower, can return the
    weights); ``"sdpa"`` calls PyTorch's fused kernel.

    Because the automatic settings are resolved at construction, ``dataclasses.replace(config,
    d_model=...)`` keeps the old ``d_ff`` and ``head_dim``; build a changed shape with
    ``ModelConfig.preset(name, **overrides)`` or pass those fields as ``None`` again.

    Block details of Gemma and OLMo 2 (all off by default):
    ``norm_placement`` also takes ``"branch_post"`` (OLMo 2: x + norm(f(x)), the norm on each
    sublayer's output, none before it) and ``"sandwich"`` (Gemma 2/3: x + norm_b(f(norm_a(x))),
    norms before and after each sublayer). ``qk_norm_scope``: with ``qk_norm``, ``"head"``
    normalises each head's head_dim vector (Qwen3, Gemma 3), ``"all"`` the whole query (and key)
    projection, n_heads*head_dim wide, before it is split into heads (OLMo 2).
    ``norm_offset``: RMSNorm multiplies by (norm_offset + weight); Gemma stores its gains as
    offsets from 1 (``norm_offset=1.0``, weights start at 0). ``embed_scale``: multiply the token
    embeddings by sqrt(d_model) (Gemma), so that a tied table of small entries still gives the
    residual stream unit-sized inputs. ``mlp="geglu"``: SwiGLU's gated MLP with a tanh-GELU gate.
    ``mlp="relu2"``: GPT-2's two-matrix MLP with relu(x)^2 in place of GELU (Primer, modded-nanogpt,
    nanochat), d_ff 4*d_model like GELU's; it has no Hugging Face / GGUF export.
    ``query_pre_attn_scalar``: attention scores are divided by sqrt(this) instead of
    sqrt(head_dim) (None: head_dim). ``attn_logit_softcap`` / ``final_logit_softcap``: scores /
    logits become cap * tanh(x / cap), smoothly bounded to (-cap, cap) (Gemma 2; None: off).
    """

    vocab_size: int = 50257
    context_length: int = 1024
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int | None = None  # None: automatic (see above); a number once constructed
    d_ff: int | None = None  # None: automatic; a number once constructed
    head_dim: int | None = None  # None: automatic; a number once constructed
    dropout: float = 0.0
    bias: bool = True
    qkv_bias: bool | None = None  # None: follow bias; a bool once constructed
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    position: str = "learned"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    mlp: str = "gelu"
    norm_placement: str = "pre"
    tie_embeddings: bool = True
    qk_norm: bool = False
    attention: str = "sdpa"
    init_std: float = 0.02
    # --- mixture of experts --- (see buildlm.model.moe; n_experts=0 keeps every MLP dense)
    n_experts: int = 0  # routed experts per MoE layer; 0: no MoE layer at all
    n_active_experts: int = 2  # top-k: experts each token is sent to
    moe_d_ff: int | None = None  # hidden width of one expert; None: d_ff
    router_score: str = "softmax"  # "softmax" over all experts, or an independent "sigmoid"
    router_renormalize: bool = True  # rescale the k chosen scores to sum to 1 (norm_topk_prob)
    n_shared_experts: int = 0  # always-on experts, fused into one MLP beside the routed ones
    shared_expert_d_ff: int | None = None  # that MLP's width; None: n_shared_experts * moe_d_ff
    shared_expert_gate: bool = False  # scale the shared MLP by sigmoid(Linear(d, 1) x) (Qwen2-MoE)
    moe_first_dense: int = 0  # the first k layers keep a dense MLP
    moe_every: int = 1  # layer i is MoE when (i + 1) % moe_every == 0 (Qwen's decoder_sparse_step)
    moe_dense_layers: list[int] | None = None  # more layers that stay dense (mlp_only_layers)
    # --- Gemma / OLMo 2 block details (see the class docstring's last paragraph) ---
    qk_norm_scope: str = "head"
    norm_offset: float = 0.0
    embed_scale: bool = False
    query_pre_attn_scalar: float | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    # --- sliding-window attention ---
    # sliding_window: how many positions a local layer sees, its own included: the query at
    # position t attends to keys t - sliding_window + 1 .. t (Mistral, Gemma: Hugging Face's
    # `kv_idx > q_idx - sliding_window`). None: no layer is local.
    sliding_window: int | None = None
    # layer_types: per layer "sliding_attention" (local) or "full_attention" (global), Hugging
    # Face's names. None: every layer "sliding_attention" when sliding_window is set (Mistral),
    # else every layer "full_attention". A list once constructed.
    layer_types: list[str] | None = None
    # rope_local_theta: the RoPE base of the local layers, unscaled (Gemma 3: 10k local, 1M
    # global). None: local layers rotate exactly as the global ones do.
    rope_local_theta: float | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
                raise ValueError(
                    f"ModelConfig.{name} must be a positive integer below 2**31, got {value!r}"
                )
        for name in AUTOMATIC_SIZES:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31
            ):
                raise ValueError(
                    f"ModelConfig.{name} must be a positive integer below 2**31 or None (automatic), "
                    f"got {value!r}"
                )
        for name, allowed in (
            ("norm", NORMS),
            ("position", POSITIONS),
            ("mlp", MLPS),
            ("norm_placement", NORM_PLACEMENTS),
            ("attention", ATTENTIONS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"unknown ModelConfig.{name} {value!r}; choose one of: {', '.join(allowed)}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.norm_eps <= 0:
            raise ValueError(f"ModelConfig.norm_eps must be positive, got {self.norm_eps!r}")
        if self.init_std <= 0:
            raise ValueError(f"ModelConfig.init_std must be positive, got {self.init_std!r}")
        if self.rope_theta <= 0:
            raise ValueError(f"ModelConfig.rope_theta must be positive, got {self.rope_theta!r}")
        if self.qkv_bias is not None and not isinstance(self.qkv_bias, bool):
            raise ValueError(
                f"ModelConfig.qkv_bias must be true, false or None (follow bias), "
                f"got {self.qkv_bias!r}"
            )
        self._resolve_automatic_sizes()
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}; each "
                "key/value head serves a whole group of query heads, so pick a divisor of n_heads"
            )
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(
                f"RoPE rotates pairs of dimensions and needs an even head_dim, got "
                f"head_dim={self.head_dim} (d_model={self.d_model} / n_heads={self.n_heads})"
            )
        if self.rope_scaling is not None:
            self._check_rope_scaling()
        if self.position == "sinusoidal" and self.d_model % 2:
            raise ValueError(
                f"sinusoidal positions pair sin/cos and need an even d_model, got {self.d_model}"
            )
        self._check_moe()
        self._check_block_details()
        self._check_sliding_window()

    def _check_moe(self) -> None:
        """Validate the mixture-of-experts fields and resolve their automatic widths."""
        for name in ("n_experts", "n_shared_experts", "moe_first_dense"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ModelConfig.{name} must be an integer >= 0, got {value!r}")
        for name in ("n_active_experts", "moe_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        for name in ("moe_d_ff", "shared_expert_d_ff"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):  # fmt: skip
                raise ValueError(
                    f"ModelConfig.{name} must be a positive integer or None, got {value!r}"
                )
        if self.n_experts and self.mlp not in ("swiglu", "gelu"):
            raise ValueError(
                f"mixture-of-experts layers have SwiGLU or GELU experts, not mlp={self.mlp!r}; "
                "set mlp='swiglu' or 'gelu' with n_experts"
            )
        if self.router_score not in ROUTER_SCORES:
            raise ValueError(
                f"unknown ModelConfig.router_score {self.router_score!r}; choose one of: "
                f"{', '.join(ROUTER_SCORES)}"
            )
        if self.n_experts and self.n_active_experts > self.n_experts:
            raise ValueError(
                f"n_active_experts={self.n_active_experts} is more than n_experts="
                f"{self.n_experts}: each token picks its top-k experts among n_experts"
            )
        if self.moe_dense_layers is not None:
            layers = self.moe_dense_layers
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
                raise ValueError(f"ModelConfig.moe_dense_layers must list layer numbers, got {layers!r}")
            self.moe_dense_layers = sorted(set(layers)) or None  # [] and None: the same network
        if self.moe_d_ff is None:
            self.moe_d_ff = self.d_ff
        if self.shared_expert_d_ff is None and self.n_shared_experts:
            self.shared_expert_d_ff = self.n_shared_experts * self.moe_d_ff

    def is_moe_layer(self, layer_idx: int) -> bool:
        """True when block ``layer_idx`` holds a mixture of experts instead of a dense MLP."""
        return (
            self.n_experts > 0
            and layer_idx >= self.moe_first_dense
            and (layer_idx + 1) % self.moe_every == 0
            and layer_idx not in (self.moe_dense_layers or ())
        )

    def _check_block_details(self) -> None:
        """Validate the Gemma / OLMo 2 switches; an explicit head_dim scale becomes None."""
        if self.qk_norm_scope not in QK_NORM_SCOPES:
            raise ValueError(
                f"unknown ModelConfig.qk_norm_scope {self.qk_norm_scope!r}; choose one of: "
                f"{', '.join(QK_NORM_SCOPES)}"
            )
        if self.norm_offset != 0.0 and self.norm != "rmsnorm":
            raise ValueError(
                f"ModelConfig.norm_offset={self.norm_offset!r} needs norm='rmsnorm', got {self.norm!r}"
            )
        for name in ("query_pre_attn_scalar", "attn_logit_softcap", "final_logit_softcap"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                raise ValueError(
                    f"ModelConfig.{name} must be a positive number or None, got {value!r}"
                )
        if self.query_pre_attn_scalar == self.head_dim:  # the default scale, spelled out
            self.query_pre_attn_scalar = None

    def _check_sliding_window(self) -> None:
        """Check the window fields and resolve ``layer_types`` to one name per layer."""
        window = self.sliding_window
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            raise ValueError(
                f"ModelConfig.sliding_window must be a positive integer or None, got {window!r}"
            )
        if self.layer_types is None:
            kind = "full_attention" if window is None else "sliding_attention"
            self.layer_types = [kind] * self.n_layers
        self.layer_types = list(self.layer_types)
        if len(self.layer_types) != self.n_layers:
            raise ValueError(
                f"ModelConfig.layer_types names {len(self.layer_types)} layers, but n_layers="
                f"{self.n_layers}; give one entry per layer"
            )
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            raise ValueError(
                f"unknown ModelConfig.layer_types {unknown}; choose from: {', '.join(LAYER_TYPES)}"
            )
        if window is None and "sliding_attention" in self.layer_types:
            raise ValueError("ModelConfig.layer_types has sliding_attention layers but no sliding_window")
        if self.rope_local_theta is not None:
            if self.position != "rope":
                raise ValueError("ModelConfig.rope_local_theta needs position='rope'")
            if self.rope_local_theta <= 0:
                raise ValueError(
                    f"ModelConfig.rope_local_theta must be positive, got {self.rope_local_theta!r}"
                )

    def layer_window(self, layer: int) -> int | None:
        """The window of layer ``layer``: ``sliding_window`` for a local layer, None for a global one."""
        return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None

    def _check_rope_scaling(self) -> None:
        scaling = self.rope_scaling
        if self.position != "rope":
            raise ValueError(
                f"ModelConfig.rope_scaling needs position='rope', got position={self.position!r}"
            )
        kind = scaling.get("type") if isinstance(scaling, dict) else None
        if kind not in ROPE_SCALINGS:
            raise ValueError(
                f"unsupported ModelConfig.rope_scaling {scaling!r}; supported types: "
                f"{', '.join(ROPE_SCALINGS)} (or None for plain RoPE)"
            )
        expected = set(ROPE_SCALINGS[kind])
        given = set(scaling) - {"type"}
        if given != expected:
            raise ValueError(
                f"rope_scaling of type {kind!r} takes exactly {sorted(expected)}; missing "
                f"{sorted(expected - given)}, unknown {sorted(given - expected)}"
            )
        for key in expected:
            value = scaling[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"rope_scaling[{key!r}] must be a positive number, got {value!r}")
        if kind == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
            raise ValueError(
                "rope_scaling: high_freq_factor must be larger than low_freq_factor, got "
                f"{scaling['high_freq_factor']!r} <= {scaling['low_freq_factor']!r}"
            )

    def _resolve_automatic_sizes(self) -> None:
        """Replace each ``None`` size by the value it stands for (once, in __post_init__)."""
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; each head "
                    f"gets d_model/n_heads dimensions, so pick n_heads dividing {self.d_model} "
                    "(or set head_dim)"
                )
            self.head_dim = self.d_model // self.n_heads
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_ff is None:
            two_matrices = self.mlp in ("gelu", "relu2")  # GPT-2's 4x; gated MLPs: Llama's rule
            self.d_ff = 4 * self.d_model if two_matrices else swiglu_hidden_size(self.d_model)
        if self.qkv_bias is None:
            self.qkv_bias = self.bias

    # ---- presets and serialisation -------------------------------------------------------
    @staticmethod
    def presets() -> list[str]:
        """Names accepted by `ModelConfig.preset`."""
        return list(PRESETS)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named configuration, with any field overridden (``preset("tiny", dropout=0.1)``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what a checkpoint stores in config.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild a config from `to_dict` output; unknown keys are an error, not silently dropped.

        Also reads what older buildlm versions wrote: ``None`` for an automatic size (resolved
        here as in any construction) and the old name ``d_head`` for ``head_dim``.
        """
        d = {RENAMED_FIELDS.get(key, key): value for key, value in d.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig field(s) {', '.join(map(repr, unknown))}; "
                f"valid fields: {', '.join(sorted(known))}"
            )
        return cls(**d)
