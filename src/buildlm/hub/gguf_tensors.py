"""GGUF tensors: their names, their layouts and their number formats, both ways.

Names. A GGUF tensor is named after the part of a block it is (``token_embd.weight``,
``blk.3.attn_q.weight``, ``blk.3.ffn_down.weight``, ``output_norm.weight``, ``output.weight``).
The ``gguf`` package that llama.cpp publishes knows which Hugging Face name becomes which
(``gguf.get_tensor_name_map``); buildlm asks it, starting from the Hugging Face state dict
(`hf_weights.buildlm_to_hf`), so the GGUF names follow the same links as the Hugging Face export.

Layouts. GGUF lists a tensor's dimensions innermost first: a torch (out, in) weight is stored
with ``ne = [in, out]``, which is what llama.cpp wants for a matrix it multiplies by, so
``nn.Linear`` weights go in as they are. Two exceptions:

- GPT-2's ``Conv1D`` weights are (in, out) in a Hugging Face file: transposed back to (out, in).
  (That is buildlm's own layout; the fused ``attn.qkv`` matches llama.cpp's ``attn_qkv``.)
- llama.cpp's ``llama`` architecture rotates *adjacent* pairs (x0, x1), (x2, x3)... of each head
  with RoPE, while buildlm and Hugging Face rotate x_i with x_{i + head_dim/2} ("rotate half").
  The same rotation is obtained by reordering the rows of q and k (and their biases) in each
  head: the first half's row j goes to row 2j, the second half's to row 2j+1 (`permute_rope`).
  Scores q.k are sums over rows, so a common reordering of q and k leaves attention unchanged.
  ``qwen2``/``qwen3`` (and Gemma, OLMo 2, Qwen2-MoE) use the rotate-half ("NeoX") mode and need
  no permutation.
- Gemma's norms multiply by (1 + w), buildlm's and Hugging Face's weight being w; llama.cpp
  multiplies by the stored weight, so 1 + w is stored (as llama.cpp's converter does). Read back,
  w = stored - 1 is exact for |w| < 1/2 or so, and (1 + w) in float32 is the stored number again.
- Qwen2-MoE's shared-expert gate, a (1, d) matrix in Hugging Face files, is one (d,) vector.

Formats. ``f32``, ``f16`` and ``bf16`` store each number; ``q8_0`` stores blocks of 32 numbers as
one float16 scale ``d = max|x| / 127`` and 32 int8 ``round(x / d)`` (34 bytes instead of 128), so
each weight is off by at most ``d / 2``. As llama.cpp's converter does, vectors (norms, biases)
stay f32, and a matrix whose rows are not a multiple of 32 long falls back to f16.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import gguf
import numpy as np
import torch

from buildlm.hub.gguf_families import GEMMA
from buildlm.hub.hf_weights import weight_links
from buildlm.model import ModelConfig

DTYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
READABLE = tuple(DTYPES.values())
_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
_SHARED_GATE = ".mlp.shared_expert_gate.weight"


def gguf_name(arch: str, n_layers: int, hf_name: str) -> str:
    """The GGUF name of a Hugging Face tensor (``model.layers.0.self_attn.q_proj.weight`` ->
    ``blk.0.attn_q.weight``), from the ``gguf`` package's own table."""
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name = gguf.get_tensor_name_map(arch_id, n_layers).get_name(
        hf_name, try_suffixes=(".weight", ".bias")
    )
    if name is None:
        raise ValueError(f"no GGUF name for tensor {hf_name!r} of a {arch} model")
    return name


def experts_name(first_expert: str) -> str:
    """The name llama.cpp's converter gives the stacked experts of a kind, from the first
    expert's Hugging Face name (``...experts.0.w1.weight`` -> ``...experts.w1.weight``)."""
    return re.sub(r"\.experts\.0\.", ".experts.", first_expert)


def hf_tensors(
    model_type: str, cfg: ModelConfig, state: Mapping[str, torch.Tensor]
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(Hugging Face name, tensor)`` for every tensor a GGUF file holds, from buildlm's state.

    As `hf_weights.buildlm_to_hf`, except that a mixture of experts' matrices stay stacked,
    (n_experts, out, in), which is how GGUF stores them (``blk.N.ffn_gate_exps.weight``).
    """
    for link in weight_links(model_type, cfg):
        t = state[link.ours]
        if link.stack:
            yield experts_name(link.theirs[0]), t
        elif link.transpose or len(link.theirs) == 1:
            yield link.theirs[0], t.t() if link.transpose else t
        else:
            yield from zip(link.theirs, t.split(list(link.rows), dim=0), strict=True)


def permute_rope(t: torch.Tensor, n_heads: int, inverse: bool = False) -> torch.Tensor:
    """Reorder each head's rows from rotate-half order to adjacent pairs (or back, ``inverse``).

    Shape (n_heads * head_dim, ...) -> the same shape. Per head: rows (a_0..a_{h/2-1},
    b_0..b_{h/2-1}) become (a_0, b_0, a_1, b_1, ...).
    """
    shape = t.shape
    if inverse:  # (heads, h/2, 2) -> (heads, 2, h/2)
        return t.reshape(n_heads, -1, 2, *shape[1:]).transpose(1, 2).reshape(shape)
    return t.reshape(n_heads, 2, -1, *shape[1:]).transpose(1, 2).reshape(shape)


def to_gguf_layout(arch: str, hf_name: str, t: torch.Tensor, heads: dict[str, int]) -> torch.Tensor:
    """A Hugging Face tensor in the layout llama.cpp expects (see the module docstring).

    ``heads`` holds ``"q"`` and ``"k"``: the number of query and key/value heads.
    """
    if arch == "gpt2" and hf_name.endswith(_CONV1D):
        return t.t()
    if arch == "llama":
        for kind in ("q", "k"):
            if f".self_attn.{kind}_proj." in hf_name:
                return permute_rope(t, heads[kind])
    if arch in GEMMA and hf_name.endswith("norm.weight"):
        return t + 1.0
    if hf_name.endswith(_SHARED_GATE):
        return t.reshape(-1)
    return t


def from_gguf_layout(arch: str, hf_name: str, t: torch.Tensor, heads: dict[str, int]) -> torch.Tensor:
    """The inverse of `to_gguf_layout`."""
    if arch == "gpt2" and hf_name.endswith(_CONV1D):
        return t.t()
    if arch == "llama":
        for kind in ("q", "k"):
            if f".self_attn.{kind}_proj." in hf_name:
                return permute_rope(t, heads[kind], inverse=True)
    if arch in GEMMA and hf_name.endswith("norm.weight"):
        return t - 1.0
    if hf_name.endswith(_SHARED_GATE):
        return t.reshape(1, -1)
    return t


def encode(t: torch.Tensor, dtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """``(array, type)`` to hand to ``GGUFWriter.add_tensor`` for ``t`` stored as ``dtype``."""
    x = t.detach().to(torch.float32).contiguous().numpy()
    kind = DTYPES[dtype]
    if x.ndim < 2:
        kind = DTYPES["f32"]  # norms and biases: small, and precision-critical
    elif kind == DTYPES["q8_0"] and x.shape[-1] % 32:
        kind = DTYPES["f16"]  # q8_0 blocks run along a row; a row must hold whole blocks
    if kind == DTYPES["f32"]:
        return x, kind
    if kind == DTYPES["f16"]:
        return x.astype(np.float16), kind
    return gguf.quants.quantize(x, kind), kind


def decode(data: np.ndarray, kind: gguf.GGMLQuantizationType, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of torch-order ``shape`` from a GGUF tensor's stored ``data``."""
    if kind not in READABLE:
        raise ValueError(
            f"GGUF tensor type {kind.name} is not supported; buildlm reads "
            + ", ".join(k.name for k in READABLE)
        )
    values = gguf.quants.dequantize(np.asarray(data), kind)
    return torch.from_numpy(np.array(values, dtype=np.float32)).reshape(shape)  # a copy: writable
