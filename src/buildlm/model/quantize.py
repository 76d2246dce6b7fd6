"""Weight-only int8 quantization: store each Linear's weight as int8 plus one scale per row.

Why it helps decoding
---------------------
Generating one token for one sequence multiplies a single activation vector by every weight
matrix of the model. Each weight is used for one multiply-add and then not again until the next
token, so the time goes into *reading the weights from memory*, not into arithmetic: decoding is
memory-bandwidth bound. A 124M-parameter model in fp32 reads about 500 MB per token; at 50 GB/s
that is 10 ms, however fast the arithmetic units are. Storing the weights in int8 cuts the bytes
read per token about 4x against fp32 and 2x against bf16/fp16 (plus a small per-row scale), and
the resident memory shrinks by the same factor. The activations stay in floating point
("weight-only"), so nothing else about the model changes.

The scheme (symmetric, per output channel)
-------------------------------------------
For row i of the weight matrix W (out, in), the output channel i:

    scale_i = max_j |W_ij| / 127          q_ij = round(W_ij / scale_i)   in [-127, 127]

and W_ij is approximated by q_ij * scale_i. One scale per row (rather than one for the whole
matrix) matters: rows differ a lot in magnitude, and a single outlier row would otherwise waste
the 8 bits of every other row. Symmetric (no zero point) keeps the maths a single multiply.

The forward pass computes ``x @ (q * scale)^T`` as ``(x @ q^T) * scale``: the scale of output
channel i multiplies column i of the result, which is exact up to float rounding and cheaper than
rebuilding the float matrix.

The error it introduces
-----------------------
Rounding moves each weight by at most half a step: |W_ij - q_ij * scale_i| <= scale_i / 2 =
max|W_i| / 254. That is a relative error of at most 0.4% of the row's largest weight (smaller on
average: the errors are roughly uniform and independent, so they partly cancel in each dot
product). Typical LLM weights lose little: perplexity moves by well under 1%. Layers whose rows
hold a few huge outliers suffer most (the scale is set by the outlier), which is what finer
schemes (per-group scales, outlier handling) address.

What this file does not do
--------------------------
In eager PyTorch, ``q.to(x.dtype)`` materialises a float copy of the weight at every call, so
on its own this saves memory but does not yet speed decoding up: the bandwidth win needs a
matmul kernel that reads the int8 weights directly (``torch.compile`` can fuse the cast into the
matmul; dedicated int8 weight-only kernels exist for CPU and GPU). Activations are not quantized
(that would be W8A8, which also speeds up the arithmetic of prefill).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.model.gpt import GPT
from buildlm.model.position import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
)

QMAX = 127  # symmetric int8 range [-127, 127]; -128 is left unused so that q and -q both fit


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 quantization: weight (out, in) -> (int8 (out, in), scale (out,)).

    ``scale`` is float32. An all-zero row gets scale 1 (any scale represents it exactly), which
    keeps the division well defined.
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / QMAX  # (out,)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)  # (out, in)
    return q, scale


class QuantizedLinear(nn.Module):
    """A Linear layer whose weight is int8 with one float32 scale per output channel.

    State dict: ``weight_int8`` (out, in) int8, ``scale`` (out,) float32 and, when the layer has
    one, ``bias`` (out,) in the original dtype. The bias stays a floating-point parameter: it is
    tiny, and keeping it exact costs nothing.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.bias = (
            nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> QuantizedLinear:
        """Quantize an existing ``nn.Linear`` (its bias is copied unchanged)."""
        w = linear.weight
        q = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        q.weight_int8, q.scale = quantize_rows(w)
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.detach().clone())
        return q

    def dequantize(self) -> torch.Tensor:
        """The float weight this layer computes with, (out, in) = q * scale per row (float32)."""
        return self.weight_int8.float() * self.scale[:, None]

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (for inspection; the forward pass never builds it)."""
        return self.dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out) = (x @ q^T) * scale + bias."""
        y = F.linear(x, self.weight_int8.to(x.dtype))  # (..., out); int8 values are exact floats
        y = y * self.scale.to(x.dtype)  # scale output channel i by scale_i
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight=int8 (per-channel scale)"
        )


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def quantize_int8(model: nn.Module, skip: Iterable[str] = ()) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` by a `QuantizedLinear`, in place; returns model.

    ``skip`` holds module names or glob patterns (``"lm_head"``, ``"blocks.0.*"``,
    ``"*.attn.qkv"``) of Linear layers to keep in full precision; a common choice is
    ``skip=("lm_head",)``, since the output layer is the most sensitive. A tied LM head
    (`GPT` with ``tie_embeddings``) is not an ``nn.Linear`` but the token-embedding matrix used
    through ``F.linear``; it stays as it is.
    """
    if isinstance(skip, str):
        raise TypeError(
            f"skip must be a collection of names, got the string {skip!r}; write skip=({skip!r},)"
        )
    patterns = tuple(skip)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not _matches(name, patterns)
    ]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(linear))
    return model


# ---- how many bytes a decoding step reads ---------------------------------------------------

_LOOKUP_TABLES = (
    nn.Embedding,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
    RotaryEmbedding,
)


def _tied_head_tensors(model: nn.Module) -> set[int]:
    """Tensors a tied LM head reads in full although they belong to a lookup table."""
    tied: set[int] = set()
    for module in model.modules():
        if isinstance(module, GPT) and module.lm_head is None:
            tied.add(id(module.tok_emb.weight))
    return tied


def _own_tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters(recurse=False)
    yield from (b for b in module.buffers(recurse=False) if b is not None)


def model_weight_bytes(model: nn.Module, per_token: bool = True) -> int:
    """Bytes of parameters and buffers a forward pass reads for one new token.

    Every weight matrix, scale, bias and norm weight is read in full for each token. Lookup
    tables (token and position embeddings, the RoPE and sinusoidal tables) only have one row
    read per token, so they count one row, unless a tied LM head also uses the token embedding
    as its output matrix, which reads all of it. A tensor shared by two modules counts once.
    ``per_token=False`` counts every byte held instead (the memory footprint).
    """
    tied = _tied_head_tensors(model)
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        lookup = per_token and isinstance(module, _LOOKUP_TABLES)
        for t in _own_tensors(module):
            if id(t) in seen:
                continue
            seen.add(id(t))
            if lookup and id(t) not in tied and t.dim() >= 1 and t.shape[0] > 0:
                total += t[0].numel() * t.element_size()  # one row per token
            else:
                total += t.numel() * t.element_size()
    return total
