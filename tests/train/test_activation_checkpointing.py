"""Activation checkpointing: the same gradients, fewer tensors kept for backward."""

from __future__ import annotations

import torch

from buildlm.model import GPT, ModelConfig
from buildlm.train.activation_checkpointing import enable_activation_checkpointing


def grads_and_saved_bytes(model, idx):
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(idx).logsumexp(-1).mean()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, saved[0]


def test_same_gradients_with_less_saved_for_backward():
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=64, context_length=64, n_layers=3, dropout=0.0))
    idx = torch.randint(0, 64, (4, 64))
    plain, plain_bytes = grads_and_saved_bytes(model, idx)
    names = list(model.state_dict())
    assert enable_activation_checkpointing(model) == 3
    assert enable_activation_checkpointing(model) == 0  # idempotent
    assert list(model.state_dict()) == names  # checkpoints unchanged
    checked, checked_bytes = grads_and_saved_bytes(model, idx)
    for name in plain:
        torch.testing.assert_close(checked[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
    assert checked_bytes < plain_bytes / 2, (checked_bytes, plain_bytes)
