"""Worked solutions for tutorials/12_fast_and_big.ipynb, one section per exercise.

Load one into its cell with ``%load -s NAME solutions/12_fast_and_big.py`` (NAME: the function
or class the exercise asks for).
"""

# %% exercise: loss_scaler
import torch


class LossScaler:
    """Dynamic loss scaling for fp16, with GradScaler's rules and defaults."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0  # finite steps in a row since the scale last changed
        self.found_inf = False

    def scale_loss(self, loss):
        return loss * self.scale

    def step(self, optimizer):
        finite = True
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(self.scale)  # back to the true gradient (exact: a power of 2)
                    finite = finite and bool(torch.isfinite(p.grad).all())
        self.found_inf = not finite
        if finite:
            optimizer.step()
        return finite

    def update(self):
        if self.found_inf:
            self.scale *= self.backoff_factor
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0


# %% exercise: accumulate
import torch.nn.functional as F


def accumulate(model, batches):
    n = len(batches)
    total = 0.0
    for x, y in batches:
        logits = model(x)  # (b, T, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        (loss / n).backward()  # gradients add up in .grad
        total += loss.item()
    return total / n


# %% exercise: explicit_attention
import math

import torch


def explicit_attention(q, k, v):
    t, d = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, H, T, T)
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # key j > query i
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, T, d)


# %% exercise: quantize
import torch
import torch.nn.functional as F


def quantize(w):
    scale = w.abs().amax(dim=1) / 127  # (out,)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    return q, scale.float()


def int8_linear(x, q, scale, bias=None):
    y = F.linear(x, q.to(x.dtype)) * scale  # (..., out): column i times scale_i
    return y if bias is None else y + bias


# %% exercise: kv_cache_bytes
def kv_cache_bytes(n_layers, n_kv_heads, head_dim, tokens, bytes_per_value, batch_size=1):
    return 2 * n_layers * batch_size * n_kv_heads * head_dim * tokens * bytes_per_value


# %% exercise: all_reduce_gradients
import torch.distributed as dist


def all_reduce_gradients(model, world_size):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # every rank gets the sum
            p.grad /= world_size  # the mean: the gradient of the global batch
