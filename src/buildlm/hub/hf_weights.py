"""Which Hugging Face tensor becomes which buildlm tensor, in both directions.

The same numbers sit under different names and, in two places, in a different layout:

- GPT-2's linear layers are ``Conv1D`` modules that store the weight as (in, out) and compute
  ``x @ W``; ``nn.Linear`` stores (out, in) and computes ``x @ W.T``. Those weights are
  transposed on the way in and out.
- Mixture-of-experts checkpoints store each expert's matrices under their own names; buildlm
  stacks them into one (n_experts, out, in) tensor per kind (``stack``; see `hf_moe`).
- Llama and Qwen keep separate ``q_proj``, ``k_proj`` and ``v_proj``; buildlm fuses them into
  one ``attn.qkv`` (one matmul instead of three). Its rows are q's rows, then k's, then v's: the
  fused weight is the three stacked along dim 0, and splitting it by row counts gives them back.

Each `Link` records one buildlm tensor, the Hugging Face tensor(s) it is made of and how. The
loader and the saver both walk the same list, so the two directions cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from buildlm.hub.hf_gemma_olmo import block_norm_names
from buildlm.hub.hf_moe import moe_names
from buildlm.model import ModelConfig


@dataclass(frozen=True)
class Link:
    """buildlm tensor ``ours`` <-> Hugging Face tensor(s) ``theirs``.

    One name in ``theirs``: the same tensor, transposed when ``transpose``. Several names: they
    are concatenated along dim 0 into ``ours``, with ``rows`` rows each, or with ``stack``
    stacked along a new dim 0 (``ours[i]`` is ``theirs[i]``: one expert each).
    """

    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False
    rows: tuple[int, ...] = ()
    stack: bool = False

    def their_shapes(self, our_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The shape each Hugging Face tensor must have, given the buildlm tensor's shape."""
        if self.stack:
            return [tuple(our_shape[1:])] * len(self.theirs)
        if self.transpose:
            return [tuple(reversed(our_shape))]
        if len(self.theirs) == 1:
            return [tuple(our_shape)]
        return [(r, *our_shape[1:]) for r in self.rows]


def _gpt2_links(cfg: ModelConfig) -> list[Link]:
    links = [Link("tok_emb.weight", ("transformer.wte.weight",))]
    links.append(Link("pos_emb.weight", ("transformer.wpe.weight",)))
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b in (("norm1", "ln_1"), ("norm2", "ln_2")):
            links += [Link(f"{ours}{a}.{p}", (f"{theirs}{b}.{p}",)) for p in ("weight", "bias")]
        for a, b in (
            ("attn.qkv", "attn.c_attn"),  # already fused: q, k, v side by side in (in, 3*d)
            ("attn.proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ):
            links.append(Link(f"{ours}{a}.weight", (f"{theirs}{b}.weight",), transpose=True))
            links.append(Link(f"{ours}{a}.bias", (f"{theirs}{b}.bias",)))
    links += [Link(f"norm.{p}", (f"transformer.ln_f.{p}",)) for p in ("weight", "bias")]
    return links


def _llama_links(model_type: str, cfg: ModelConfig) -> list[Link]:
    links = [Link("tok_emb.weight", ("model.embed_tokens.weight",))]
    q_rows, kv_rows = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        for a, b in block_norm_names(model_type):  # which norms, and where (pre, sandwich, ...)
            links.append(Link(f"{ours}{a}.weight", (f"{theirs}{b}.weight",)))
        qkv_params = ["weight"] + (["bias"] if cfg.qkv_bias else [])
        for p in qkv_params:
            names = tuple(f"{theirs}self_attn.{n}_proj.{p}" for n in ("q", "k", "v"))
            links.append(Link(f"{ours}attn.qkv.{p}", names, rows=(q_rows, kv_rows, kv_rows)))
        moe = cfg.is_moe_layer(i)
        for p in ["weight"] + (["bias"] if cfg.bias else []):
            links.append(Link(f"{ours}attn.proj.{p}", (f"{theirs}self_attn.o_proj.{p}",)))
            for a, b in () if moe else (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                links.append(Link(f"{ours}mlp.{a}.{p}", (f"{theirs}mlp.{b}.{p}",)))
        if moe:
            for name, names, stack in moe_names(model_type, cfg, ours, theirs):
                links.append(Link(name, names, stack=stack))
        if cfg.qk_norm:
            for n in ("q_norm", "k_norm"):
                links.append(Link(f"{ours}attn.{n}.weight", (f"{theirs}self_attn.{n}.weight",)))
    links.append(Link("norm.weight", ("model.norm.weight",)))
    return links


def weight_links(model_type: str, cfg: ModelConfig) -> list[Link]:
    """Every buildlm parameter of a ``cfg`` network and where it lives in a ``model_type`` file."""
    links = _gpt2_links(cfg) if model_type == "gpt2" else _llama_links(model_type, cfg)
    if not cfg.tie_embeddings:  # a tied model has no head of its own: it reuses tok_emb
        links.append(Link("lm_head.weight", ("lm_head.weight",)))
    return links


# Tensors a checkpoint may carry that are not weights: GPT-2's causal-mask buffers and the RoPE
# frequencies some Llama files kept. buildlm recomputes both.
_NOT_WEIGHTS = {
    "gpt2": re.compile(r"\.attn\.(masked_)?bias$"),
    "llama": re.compile(r"\.rotary_emb\.inv_freq$"),
}


def canonical_name(model_type: str, name: str) -> str:
    """A checkpoint tensor name with the model prefix that transformers' save adds.

    Checkpoints saved from the bare transformer (GPT-2's own files: ``h.0.attn.c_attn.weight``)
    lack the ``transformer.`` / ``model.`` prefix of the language-model class.
    """
    prefix = "transformer." if model_type == "gpt2" else "model."
    if name.startswith((prefix, "lm_head.")):
        return name
    return prefix + name


def is_ignored(model_type: str, name: str, cfg: ModelConfig) -> bool:
    """True for tensors a checkpoint may hold that buildlm does not load.

    Besides buffers, a tied model's file may still hold ``lm_head.weight``: a copy of the token
    embedding that transformers also skips when it ties the two.
    """
    if cfg.tie_embeddings and name == "lm_head.weight":
        return True
    pattern = _NOT_WEIGHTS["gpt2" if model_type == "gpt2" else "llama"]
    return bool(pattern.search(name))


def hf_to_buildlm(
    model_type: str, cfg: ModelConfig, hf_state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A buildlm state dict from a Hugging Face one (held in memory; `load_hf` streams instead)."""
    out = {}
    for link in weight_links(model_type, cfg):
        parts = [hf_state[canonical_name(model_type, n)] for n in link.theirs]
        if link.transpose:
            out[link.ours] = parts[0].t().contiguous()
        elif link.stack:
            out[link.ours] = torch.stack(parts)
        else:
            out[link.ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return out


def buildlm_to_hf(
    model_type: str, cfg: ModelConfig, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A Hugging Face state dict from a buildlm one.

    Split and transposed tensors are views of ``state`` (no copy); `write_safetensors` makes
    each contiguous only while writing it.
    """
    out = {}
    for link in weight_links(model_type, cfg):
        t = state[link.ours]
        if link.transpose:
            out[link.theirs[0]] = t.t()
        elif link.stack:
            out.update(zip(link.theirs, t.unbind(0), strict=True))
        elif len(link.theirs) == 1:
            out[link.theirs[0]] = t
        else:
            out.update(zip(link.theirs, t.split(list(link.rows), dim=0), strict=True))
    return out
