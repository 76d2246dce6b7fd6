# Worked answers for tutorials/11_experts_and_windows.ipynb, one section per exercise.
# Load one into its cell with `%load -s NAME solutions/11_experts_and_windows.py`.

# %% exercise: route
import torch
import torch.nn.functional as F


def my_route(x, router_weight, k, score="softmax", renormalize=True):
    """Score every expert for every token, keep each token's k best.

    x (N, d_model), router_weight (n_experts, d_model) -> top_w (N, k), top_ids (N, k),
    logits (N, n_experts).
    """
    logits = x @ router_weight.T  # (N, E): one score per token and expert
    scores = logits.softmax(dim=-1) if score == "softmax" else logits.sigmoid()
    top_w, top_ids = scores.topk(k, dim=-1)  # (N, k), best first
    if renormalize:
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
    return top_w, top_ids, logits


# %% exercise: dispatch
import torch
import torch.nn.functional as F


def my_experts_forward(x, top_w, top_ids, w_gate, w_up, w_down):
    """Send each token to its k experts, grouped by expert, and add the weighted outputs.

    x (N, d), top_w and top_ids (N, k), w_gate and w_up (E, d_ff, d), w_down (E, d, d_ff)
    -> (N, d).
    """
    n_experts, k = w_gate.shape[0], top_ids.shape[1]
    flat = top_ids.reshape(-1)  # (N*k,) assignment a: token a // k, slot a % k
    order = flat.argsort(stable=True)  # the assignments, grouped by expert
    token = order // k  # (N*k,) the token of each sorted assignment
    counts = torch.bincount(flat, minlength=n_experts).tolist()  # tokens per expert
    outs = []
    for e, xs in enumerate(x[token].split(counts)):  # expert e's tokens: one slice
        if len(xs):
            h = F.silu(xs @ w_gate[e].T) * (xs @ w_up[e].T)  # (n_e, d_ff)
            outs.append(h @ w_down[e].T)  # (n_e, d)
    y = torch.cat(outs) * top_w.reshape(-1)[order, None]  # (N*k, d), weighted
    return torch.zeros_like(x).index_add_(0, token, y)  # each token sums its k outputs


# %% exercise: router_losses
import torch


def my_router_losses(logits, top_ids):
    """Switch Transformer's load-balancing loss, ST-MoE's z-loss, and each expert's share.

    logits (N, n_experts) of a softmax router, top_ids (N, k) -> balance (scalar, with grad),
    z (scalar, with grad), share (n_experts,), no grad, summing to 1.
    """
    n_experts = logits.shape[-1]
    with torch.no_grad():
        counts = torch.bincount(top_ids.reshape(-1), minlength=n_experts)
        share = counts.float() / top_ids.numel()  # f_e: share of the N*k assignments
    mean_prob = logits.softmax(dim=-1).mean(dim=0)  # P_e: (n_experts,), carries the gradient
    balance = n_experts * (share * mean_prob).sum()
    z = torch.logsumexp(logits, dim=-1).pow(2).mean()
    return balance, z, share


# %% exercise: sliding_mask
import torch


def my_mask(q_len, k_len, window):
    """Boolean (q_len, k_len): the query i (at position k_len - q_len + i) sees key j when
    i_abs - window < j <= i_abs."""
    i = torch.arange(k_len - q_len, k_len)[:, None]  # (q_len, 1) absolute query positions
    j = torch.arange(k_len)[None, :]  # (1, k_len)
    return (j <= i) & (j > i - window)


# %% exercise: ring_cache
import torch


class RingKVCache:
    """The keys and values of one local attention layer: only the last ``window`` positions."""

    def __init__(self, batch_size, n_heads, head_dim, window):
        self.window = window
        self.k = torch.zeros(batch_size, n_heads, window, head_dim)
        self.v = torch.zeros(batch_size, n_heads, window, head_dim)
        self.positions = torch.full((window,), -1)  # nothing written yet
        self.next = 0  # the position the next update writes

    def update(self, k, v):
        slot = self.next % self.window  # the oldest slot, or an empty one
        self.k[:, :, slot] = k[:, :, 0]
        self.v[:, :, slot] = v[:, :, 0]
        self.positions[slot] = self.next
        self.next += 1
        return self.k, self.v, self.positions.clone()
