"""The LM head and its cross-entropy in one step, a few rows at a time: no full fp32 logits.

Under bf16 autocast the usual loss is ``F.cross_entropy(logits.float(), y)``: the head writes
bf16 logits (N, V), ``.float()`` copies them to fp32 (at GPT-2's V = 50,257 and N = 1,024 tokens
that is 206 MB written), ``log_softmax`` reads that and writes another 206 MB, and backward
fills a zero gradient of the same size, writes the softmax gradient in fp32 and casts it back to
bf16. Those passes over N x V memory cost as much as a tenth of a CPU training step.

This module computes the same loss and gradient with less traffic. The gradient of the mean
cross-entropy with respect to the logits is known in closed form,

    d loss / d logits[i] = (softmax(logits[i]) - onehot(y[i])) / N,

so it can be written during the forward pass, while each chunk of rows is still in the cache:
for ``chunk_rows`` rows at a time the bf16 logits are read once into fp32 (a chunk of 32 rows
is 6 MB), log-softmax gives the loss of those rows, and ``exp(log p) - onehot`` goes back into
the same bf16 buffer, which becomes the logits' gradient (the 1/N and the incoming gradient are
applied later, on the small (N, d) side). Backward is then just the head's two matmuls:
``grad_hidden = g @ W`` and ``grad_W = g^T @ hidden``. The fp32 values are rounded to bf16 once,
exactly as autograd rounds the fp32 softmax gradient when it casts it back to the bf16 logits.

The chunk size is a cache/overhead trade: each chunk is a handful of kernel calls.
"""

from __future__ import annotations

import torch

CHUNK_ROWS = 32
"""Rows per chunk: 32 x 50,257 fp32 values is 6.4 MB, within a server CPU's L2 + L3 share."""


class _LinearCrossEntropy(torch.autograd.Function):
    """loss = mean over non-ignored rows of -log softmax(hidden @ weight^T)[target]."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int,
        chunk_rows: int,
    ) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):  # dtypes chosen by the caller
            logits = hidden @ weight.t()  # (N, V) in hidden's dtype; becomes the gradient
            n = logits.shape[0]
            losses = torch.zeros(n, dtype=torch.float32, device=hidden.device)
            valid = targets != ignore_index  # (N,)
            safe = torch.where(valid, targets, 0)  # (N,) an index that exists for every row
            count = int(valid.sum())
            for start in range(0, n, chunk_rows):
                rows = slice(start, start + chunk_rows)
                chunk = logits[rows]  # (r, V) view into logits
                logp = torch.log_softmax(chunk, dim=-1, dtype=torch.float32)  # (r, V) fp32
                t = safe[rows].unsqueeze(1)  # (r, 1)
                ok = valid[rows]
                losses[rows] = torch.where(ok, -logp.gather(1, t).squeeze(1), 0.0)
                probs = logp.exp_()  # softmax, in place, fp32
                probs.scatter_add_(1, t, -ok.to(probs.dtype).unsqueeze(1))  # - onehot(y)
                if count < n:
                    probs.mul_(ok.unsqueeze(1))  # ignored rows add no gradient
                chunk.copy_(probs)  # rounded once to the logits' dtype
            loss = losses.sum() / max(count, 1)
        ctx.save_for_backward(logits, hidden, weight)
        ctx.count = count
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):  # type: ignore[override]
        g, hidden, weight = ctx.saved_tensors  # g (N, V): softmax - onehot
        scale = float(grad_loss) / max(ctx.count, 1)
        zero = hidden.new_zeros(())
        with torch.autocast(hidden.device.type, enabled=False):
            grad_hidden = grad_weight = None
            # alpha: the GEMM applies the scale to its fp32 sums before rounding them once.
            if ctx.needs_input_grad[0]:
                grad_hidden = torch.addmm(zero, g, weight, beta=0, alpha=scale)  # (N, d)
            if ctx.needs_input_grad[1]:
                grad_weight = torch.addmm(zero, g.t(), hidden, beta=0, alpha=scale)  # (V, d)
        return grad_hidden, grad_weight, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk_rows: int = CHUNK_ROWS,
) -> torch.Tensor:
    """``F.cross_entropy(F.linear(hidden, weight).float(), targets)`` without full fp32 logits.

    hidden (..., d), weight (V, d), targets (...) of token ids (``ignore_index`` rows count
    neither in the loss nor in the mean). Under autocast both matrices are cast to the autocast
    dtype first (as ``F.linear`` would) and the loss is fp32; outside it they must share a dtype.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree: "
            "pass one target per hidden vector"
        )
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    elif hidden.dtype != weight.dtype:
        raise ValueError(f"hidden is {hidden.dtype} but weight is {weight.dtype}; cast one")
    flat = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    with torch.profiler.record_function("buildlm::linear_cross_entropy"):  # named in profiles
        return _LinearCrossEntropy.apply(flat, weight, targets.reshape(-1), ignore_index, chunk_rows)
