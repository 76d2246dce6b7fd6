"""Worked answers for tutorials/08_fine_tuning.ipynb, one section per exercise.

Load one into its cell with ``%load -s NAME solutions/08_fine_tuning.py``.
"""

# %% exercise: pool
import torch


def pool(hidden, mask, how):
    """One vector per row: hidden (B, T, d), mask (B, T) True at real tokens -> (B, d)."""
    if how == "last":
        last = mask.sum(dim=1) - 1  # (B,): index of each row's last real token (right padding)
        return hidden[torch.arange(hidden.shape[0]), last]
    weights = mask.float().unsqueeze(-1)  # (B, T, 1): 1 at real tokens, 0 at pads
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


# %% exercise: classifier
from torch import nn


class Classifier(nn.Module):
    """A GPT whose next-token head is replaced by a linear head to ``n_classes`` scores."""

    def __init__(self, gpt, n_classes, pooling="mean"):
        super().__init__()
        self.gpt = gpt
        self.pooling = pooling
        self.score = nn.Linear(gpt.config.d_model, n_classes)

    def forward(self, ids, mask):
        return self.score(pool(self.gpt.hidden_states(ids), mask, self.pooling))


# %% exercise: freeze
def freeze(classifier, last_n_blocks):
    """Freeze all of ``classifier`` but its last ``last_n_blocks`` blocks, ``gpt.norm`` and ``score``."""
    classifier.requires_grad_(False)
    blocks = classifier.gpt.blocks
    for block in blocks[len(blocks) - last_n_blocks :]:
        block.requires_grad_(True)
    classifier.gpt.norm.requires_grad_(True)
    classifier.score.requires_grad_(True)
    return sum(p.numel() for p in classifier.parameters() if p.requires_grad)


# %% exercise: collate_instruct
def collate_instruct(examples, pad_id):
    """Right-padded (x, y) for examples with ``.ids`` and ``.labels`` (lists of equal length)."""
    width = max(len(e.ids) for e in examples) - 1
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.ids) - 1
        x[i, :n] = torch.tensor(e.ids[:-1])  # inputs: every token but the last
        y[i, :n] = torch.tensor(e.labels[1:])  # targets: the next token, -100 on the prompt
    return x, y


# %% exercise: lora_linear
import math

import torch.nn.functional as F


class LoRALinearMine(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: y = x W^T + b + s · x A^T B^T."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))  # (r, in)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r): starts at 0

    def forward(self, x):
        low_rank = F.linear(F.linear(x, self.lora_A), self.lora_B)  # (..., r) -> (..., out)
        return F.linear(x, self.weight, self.bias) + self.scaling * low_rank

    def merge(self):
        out_features, in_features = self.weight.shape
        merged = nn.Linear(in_features, out_features, bias=self.bias is not None)
        with torch.no_grad():
            merged.weight.copy_(self.weight + self.scaling * self.lora_B @ self.lora_A)
            if self.bias is not None:
                merged.bias.copy_(self.bias)
        return merged


# %% exercise: dpo
def my_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """The mean DPO loss over N pairs; each argument a (N,) tensor of summed log-probabilities."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward).mean()
