"""Half-precision matrix products done in float32, on CPUs that have no 16-bit math.

A bf16 model halves the bytes a decode step streams, and a batch-1 decode step is bound by
streaming: there bf16 wins. A product over many rows is different: a prompt of T tokens (a
prefill), or a decode step of a large batch, multiplies every weight matrix by T (or B) rows at
once, and that is bound by arithmetic. CPUs without bf16/fp16 instructions (AVX2 machines,
AVX-512 ones before Cooper Lake) do that arithmetic in software, converting every element for
every row. Converting the weight to float32 once and multiplying in float32 is faster as soon as
there are a handful of rows. Measured on a 2-core Zen 3 (AVX2), GPT-2 shapes:

    rows   (768 -> 3072) bf16   in float32      (768 -> 50257, the LM head) bf16   in float32
      4          1.0 ms          1.1-1.4 ms                    15 ms                   17 ms
      8          1.9 ms              1.2 ms                    31 ms                   18 ms
     16          3.7 ms              1.3 ms                    61 ms                   22 ms
    128           30 ms              4.8 ms                   486 ms                   75 ms

The weight is converted a block of output rows at a time (`CHUNK_BYTES` of float32), so the
converted block is still in the cache when the product reads it: converting the whole 50257-row
LM head at once writes 154 MB to memory and reads it back, and took longer than the bf16 product.

Products of bf16 values are exact in float32 and the bf16 kernel accumulates in float32 too, so
the result differs from the bf16 kernel's only by the order of the additions (and rounds to the
same bf16 value almost always).

`Float32Matmuls` is a ``TorchFunctionMode``: inside ``with Float32Matmuls():`` every
``F.linear`` (every ``nn.Linear``, the tied LM head, LoRA and int8 layers) with half-precision
operands on the CPU and at least `MIN_ROWS` rows goes through `float32_linear`; nothing else
changes, and the model code does not know. The mode costs a Python call per tensor operation,
so the engine enters it only for products with many rows (`float32_matmuls`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

HALF_DTYPES = (torch.bfloat16, torch.float16)
MIN_ROWS = 8  # measured cross-over: at 4-6 rows the 16-bit kernel is as fast or faster
CHUNK_BYTES = 4 << 20  # float32 bytes of weight converted at a time: fits in the L3 cache


def has_native_matmul(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies ``dtype`` matrices in hardware (oneDNN's own check)."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def float32_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed in float32, returned in ``x``'s dtype.

    x: (..., in); weight: (out, in); bias: (out,). The weight is converted block by block of
    output rows (`CHUNK_BYTES` each), every block multiplied while it is still in the cache.
    """
    out_features, in_features = weight.shape
    rows = max(1, CHUNK_BYTES // (4 * in_features))
    x32 = x.float()
    out = torch.empty(*x.shape[:-1], out_features, dtype=torch.float32, device=x.device)
    for start in range(0, out_features, rows):
        block = slice(start, start + rows)
        part_bias = None if bias is None else bias[block].float()
        out[..., block] = F.linear(x32, weight[block].float(), part_bias)  # (..., rows)
    return out.to(x.dtype)


class Float32Matmuls(TorchFunctionMode):
    """Routes half-precision CPU ``F.linear`` calls with >= `MIN_ROWS` rows through `float32_linear`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x = args[0] if args else kwargs["input"]
            if x.dtype in HALF_DTYPES and x.device.type == "cpu" and x.numel() >= MIN_ROWS * x.shape[-1]:
                weight = args[1] if len(args) > 1 else kwargs["weight"]
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                return float32_linear(x, weight, bias)
        return func(*args, **kwargs)


def float32_matmuls(model: nn.Module, rows: int) -> contextlib.AbstractContextManager:
    """The context a forward pass of ``rows`` token rows through ``model`` should run in.

    `Float32Matmuls` for a half-precision model on a CPU without native 16-bit matrix
    instructions when ``rows >= MIN_ROWS``; otherwise a context that does nothing.
    """
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if (
        param is None
        or param.device.type != "cpu"
        or param.dtype not in HALF_DTYPES
        or rows < MIN_ROWS
        or has_native_matmul(param.dtype)
    ):
        return contextlib.nullcontext()
    return Float32Matmuls()
