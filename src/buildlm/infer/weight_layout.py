"""How the weights sit in memory, arranged for decoding one token at a time on a CPU.

At batch size 1 a decode step multiplies one vector by every weight matrix once. There is almost
no arithmetic per byte, so the step is bounded by how fast the CPU streams the weights from
memory: tokens/s <= bandwidth / bytes of weights. How close a CPU gets to that bound depends on
how the matrices are laid out, not only on how large they are. Two things matter:

1. **Row length.** A Linear weight is stored (out, in). Multiplying it by a vector streams `out`
   dot products of length `in`; each ends with a horizontal sum and a restart. Stored transposed,
   (in, out), the product streams `in` rows of length `out`, each added into the result scaled by
   one input value. The layout whose contiguous rows are longer streams faster. Measured with
   MKL's fp32 kernels on GPT-2's shapes (2 cores, Zen 3): the (768 -> 2304) and (768 -> 3072)
   projections stream at 16 GB/s as (out, in) and 23 GB/s as (in, out); the (3072 -> 768)
   projection the other way round (23 vs 17 GB/s). So a float32 matrix is kept (in, out) when
   ``in_features <= out_features``. bf16 and fp16 products on CPUs without 16-bit instructions
   convert in software, and only the (out, in) kernel does that fast (19 GB/s against 1 GB/s),
   so half-precision matrices keep the usual layout.
2. **Page size.** Every 4 KiB page streamed needs an address translation; the TLB holds only a
   few thousand, and under virtualisation each miss walks two page tables. Transparent huge
   pages (2 MiB) cut the misses 512-fold: streaming a large matrix went from 22 to 25 GB/s on
   the same machine. Linux backs memory with huge pages only where asked (``madvise``), so all the
   weights are copied into one 2 MiB-aligned anonymous mapping marked ``MADV_HUGEPAGE``.

The layouts are chosen for batch 1. With 8 or 32 rows per step the products become small matrix
products, and there the (out, in) layout is 10-30% faster for the 768-wide matrices while the
transposed LM head stays faster (measured: 23 against 34 ms for the head at 8 rows); one copy
of the weights cannot have both, and batch 1 is where decoding is slowest per token.

`arrange_for_decoding` does both in place: each parameter keeps its identity, shape and values
(``param.data`` is swapped), so optimizers, state dicts, LoRA and saving all keep working; only
the strides and the memory behind the parameters change. The tied LM head (the embedding table,
(vocab, d_model)) counts as a Linear weight: (d_model, vocab) rows are 50,257 floats long, and
``nn.Embedding`` reads its strided rows correctly (slower, but a decode step looks up one row).
"""

from __future__ import annotations

import contextlib
import mmap
import weakref
from collections.abc import Iterable

import torch
from torch import nn

from buildlm.model.quantize import QuantizedLinear

HUGE_PAGE = 2 << 20  # bytes: the x86-64 / arm64 transparent huge page
ALIGN = 64  # bytes: a cache line, so no tensor shares one with its neighbour


def prefers_transposed(weight: torch.Tensor, compute_dtype: torch.dtype | None = None) -> bool:
    """Whether a Linear weight (out, in) streams faster stored as (in, out) (see the module doc).

    ``compute_dtype`` is the dtype the product runs in when it differs from the stored one (an
    int8 weight is converted to the activations' dtype first, keeping its strides).
    """
    out_features, in_features = weight.shape
    dtype = compute_dtype or weight.dtype
    return weight.device.type == "cpu" and dtype == torch.float32 and in_features <= out_features


def matrix_weights(model: nn.Module) -> set[int]:
    """ids of the tensors used as Linear weights: ``nn.Linear``'s, int8 ones, a tied LM head."""
    ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    ids |= {id(m.weight_int8) for m in model.modules() if isinstance(m, QuantizedLinear)}
    if getattr(model, "lm_head", "untied") is None and hasattr(model, "tok_emb"):
        ids.add(id(model.tok_emb.weight))  # GPT.head multiplies by the embedding table
    return ids


def huge_page_bytes(nbytes: int) -> torch.Tensor:
    """A uint8 tensor of ``nbytes``, 2 MiB-aligned and backed by huge pages where possible.

    Private anonymous memory marked ``MADV_HUGEPAGE`` (Linux); elsewhere, or when the kernel
    refuses, ordinary pages. The tensor keeps the mapping alive.
    """
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or nbytes == 0:
        return torch.empty(nbytes, dtype=torch.uint8)
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE)
    with contextlib.suppress(OSError):  # huge pages disabled: ordinary ones work, a little slower
        mapping.madvise(advice)
    whole = torch.frombuffer(mapping, dtype=torch.uint8)
    start = -whole.data_ptr() % HUGE_PAGE
    return whole[start : start + nbytes]


def arrange_for_decoding(model: nn.Module, huge_pages: bool = True) -> int:
    """Re-lay a CPU model's parameters and buffers out for batch-1 decoding; returns the bytes moved.

    Matrices used as Linear weights take the layout `prefers_transposed` picks; everything is
    copied into one arena (huge pages when ``huge_pages``). Values and shapes are unchanged.
    Calling it again on a model it arranged, unchanged since, does nothing (returns 0): an
    `Engine` is cheap to build again. After ``.to(dtype)`` or anything else that replaces tensors
    it re-arranges them. Models not on the CPU are left alone (returns 0).
    """
    places: dict[int, list[tuple[nn.Module, str, bool]]] = {}  # tensor id -> where it is held
    tensors: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for is_param, table in ((True, module._parameters), (False, module._buffers)):
            for name, t in table.items():
                if t is not None:
                    tensors.setdefault(id(t), t)
                    places.setdefault(id(t), []).append((module, name, is_param))
    if not tensors or any(t.device.type != "cpu" for t in tensors.values()):
        return 0
    if _arranged.get(model) == (huge_pages, storage_fingerprint(tensors.values())):
        return 0  # every tensor is still where and how this function put it
    matrices = matrix_weights(model)
    compute_dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), None)
    sizes = {key: -(-t.numel() * t.element_size() // ALIGN) * ALIGN for key, t in tensors.items()}
    total = sum(sizes.values())
    # Normal tensors even when called under inference mode: the model may be trained afterwards.
    with torch.inference_mode(False), torch.no_grad():
        arena = huge_page_bytes(total) if huge_pages else torch.empty(total, dtype=torch.uint8)
        offset, placed = 0, []
        for key in list(tensors):
            t = tensors.pop(key)  # drop our reference: the old memory goes once it is replaced
            raw = arena[offset : offset + t.numel() * t.element_size()].view(t.dtype)
            offset += sizes[key]
            dtype = t.dtype if t.is_floating_point() else compute_dtype  # int8: converted first
            if key in matrices and t.dim() == 2 and prefers_transposed(t, dtype):
                new = raw.view(t.shape[1], t.shape[0]).t()  # (out, in) view of (in, out) memory
            else:
                new = raw.view(t.shape)
            new.copy_(t)
            placed.append(new)
            for module, name, is_param in places[key]:
                if is_param:
                    module._parameters[name].data = new  # the same Parameter object everywhere
                else:
                    module._buffers[name] = new
    _arranged[model] = (huge_pages, storage_fingerprint(placed))
    return total


# model -> (huge_pages, fingerprint of its tensors) as arrange_for_decoding left them
_arranged: weakref.WeakKeyDictionary[nn.Module, tuple[bool, list[tuple]]] = weakref.WeakKeyDictionary()


def storage_fingerprint(tensors: Iterable[torch.Tensor]) -> list[tuple]:
    """Where and how each tensor is stored: (address, strides, dtype), in order."""
    return [(t.data_ptr(), t.stride(), t.dtype) for t in tensors]
