"""A decode step whose shapes never change: what CUDA graphs and ``torch.compile`` need.

Why it matters on a GPU: a batch-1 decode step of GPT-2 124M is ~300 small kernels. Reading
its 250 MB of bf16 weights takes the GPU ~80 us, but launching each kernel costs the CPU ~5 us,
so an eager step is bound by the Python and launch overhead and the GPU mostly waits. A CUDA
graph records the step's kernels once and replays them all with one launch.

A graph replays the same kernels on the same memory, so everything that changes between steps
must live in a fixed buffer that is overwritten before each replay:

- the new token of each row (copied in before each replay);
- its position (``positions``), the cache slot it goes to (`buildlm.infer.kvcache.SlotWriter`)
  and the key mask (B, max_len) saying which slots hold real keys: the step itself moves them
  on by one, so between steps only the token is copied in. Attention always reads the whole
  cache, so its shapes never change; the mask hides the slots not written yet and the pads;
- the logits come out in a fixed (B, vocab) buffer.

``compile=True`` first runs the step through ``torch.compile``, which fuses the small
element-wise kernels (norms, GELU, residual adds, RoPE) into fewer; the graph then records the
compiled kernels. On the CPU there are no graphs: the same step runs eagerly or compiled (that
is also how the tests check it).
"""

from __future__ import annotations

import torch
from torch import nn

from buildlm.infer.kvcache import SlotWriter, StaticKVCache
from buildlm.infer.weight_layout import storage_fingerprint


class StaticDecodeStep:
    """One-token decode steps over ``cache`` with fixed shapes, replayed as a CUDA graph on a GPU.

    Build it before the cache is filled (recording the graph runs the step, writing slot 0);
    after each prefill call `start`, then call the step with one token per row. ``cuda_graph``
    defaults to on for CUDA caches.
    """

    def __init__(
        self,
        model: nn.Module,
        cache: StaticKVCache,
        compile: bool = False,
        cuda_graph: bool | None = None,
    ) -> None:
        device = cache.device
        b, max_len = cache.batch_size, cache.max_len
        self.model, self.cache = model, cache
        self.writer = SlotWriter(cache)
        self.tokens = torch.zeros(b, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(b, 1, dtype=torch.long, device=device)
        self.key_mask = torch.zeros(b, max_len, dtype=torch.bool, device=device)
        self._forward = torch.compile(self._logits, dynamic=False) if compile else self._logits
        if hasattr(model, "cover_positions"):  # grow the RoPE tables now, not while recording
            model.cover_positions(max_len)
        self.weights = model_storage(model)  # where the graph reads them
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # the graph's output buffer
        if cuda_graph is None:
            cuda_graph = device.type == "cuda"
        if cuda_graph:
            self._record()

    def start(self, key_mask: torch.Tensor | None, positions: torch.Tensor) -> None:
        """Take over after a prefill of the cache's first ``cache.offset`` slots.

        ``key_mask`` (B, offset) marks the real tokens (None: no pads); ``positions`` (B, 1) is
        each row's last position.
        """
        filled = self.cache.offset
        self.writer.slot.fill_(filled)
        self.key_mask.zero_()
        self.key_mask[:, :filled] = True if key_mask is None else key_mask
        self.positions.copy_(positions)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,) into the next cache slot; return float32 logits (B, V).

        The logits are the step's own buffer when a graph runs: read them before the next call.
        """
        slot = self.cache.offset
        if slot >= self.cache.max_len:
            raise ValueError(f"the KV cache is full ({slot} positions); prefill again to slide")
        self.tokens.copy_(tokens.view(-1, 1))
        if self.graph is not None:
            self.graph.replay()
            logits = self.logits
        else:
            logits = self._forward()
        self.cache.offset = slot + 1
        return logits

    def _logits(self) -> torch.Tensor:
        """The recorded step: move position, mask and slot on by one; run the model."""
        self.positions.add_(1)
        self.key_mask.index_fill_(1, self.writer.slot, True)
        hidden = self.model.hidden_states(self.tokens, self.writer, self.positions, self.key_mask)
        self.writer.slot.add_(1)
        return self.model.head(hidden[:, -1]).float()  # (B, 1, d_model) -> (B, V)

    def _record(self) -> None:
        """Run the step a few times on a side stream (compiling, creating library workspaces),
        then record it. What it writes meanwhile, `start` resets."""
        side = torch.cuda.Stream(self.cache.device)
        side.wait_stream(torch.cuda.current_stream(side.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._forward()
        torch.cuda.current_stream(side.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._forward()


def model_storage(model: nn.Module) -> list[tuple]:
    """Where and how every parameter and buffer of ``model`` is stored (a recorded graph reads
    them at these addresses)."""
    return storage_fingerprint([*model.parameters(), *model.buffers()])
