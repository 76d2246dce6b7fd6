"""The learning-rate schedule against PyTorch's own schedulers, and the AdamW parameter groups."""

import math
from itertools import pairwise

import pytest
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.train.optim import decay_parameter_names, lr_at, make_optimizer, param_groups


@pytest.mark.parametrize(("warmup", "max_steps"), [(10, 100), (1, 50), (25, 26)])
def test_schedule_matches_torch_warmup_then_cosine(warmup, max_steps):
    lr, min_lr = 3e-3, 3e-4
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    # torch's pieces: LinearLR ramps (1/w .. 1) over w-1 steps, then CosineAnnealingLR to eta_min.
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=max(warmup - 1, 0))
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_steps - warmup, eta_min=min_lr)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[warmup])
    for step in range(max_steps + 1):
        expected = opt.param_groups[0]["lr"]
        assert lr_at(step, lr, min_lr, warmup, max_steps) == pytest.approx(expected, rel=1e-9, abs=1e-12), step
        opt.step()
        sched.step()


def test_schedule_landmarks_and_floor():
    lr, min_lr = 1.0, 0.1
    assert lr_at(0, lr, min_lr, 4, 20) == 0.25  # warmup never starts at zero
    assert lr_at(3, lr, min_lr, 4, 20) == 1.0
    assert lr_at(4, lr, min_lr, 4, 20) == 1.0  # cosine starts at the peak
    assert lr_at(12, lr, min_lr, 4, 20) == pytest.approx(min_lr + 0.5 * (lr - min_lr))  # halfway
    assert lr_at(20, lr, min_lr, 4, 20) == min_lr
    assert lr_at(500, lr, min_lr, 4, 20) == min_lr  # flat floor after max_steps
    values = [lr_at(s, lr, min_lr, 4, 20) for s in range(4, 21)]
    assert all(a >= b for a, b in pairwise(values))
    assert lr_at(0, lr, min_lr, 0, 10) == lr and math.isclose(lr_at(10, lr, min_lr, 0, 10), min_lr)


def test_param_groups_follow_the_dim_rule():
    model = GPT(ModelConfig.preset("tiny"))
    decay, no_decay = decay_parameter_names(model)
    assert "tok_emb.weight" in decay and "pos_emb.weight" in decay
    assert "blocks.0.attn.qkv.weight" in decay and "blocks.3.mlp.proj.weight" in decay
    assert "blocks.0.attn.qkv.bias" in no_decay and "blocks.0.norm1.weight" in no_decay
    assert "norm.weight" in no_decay and "norm.bias" in no_decay
    assert all(n.endswith("bias") or "norm" in n for n in no_decay)
    groups = param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    # every parameter exactly once (the tied head adds no second copy)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert sum(p.numel() for g in groups for p in g["params"]) == model.num_params()


def test_llama_style_untied_head_decays():
    model = GPT(ModelConfig.preset("llama-small", d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=100))
    decay, no_decay = decay_parameter_names(model)
    assert "lm_head.weight" in decay
    assert all("norm" in n for n in no_decay)  # no biases in this family: only RMSNorm gains


def test_optimizer_uses_a_multi_tensor_implementation():
    model = GPT(ModelConfig.preset("tiny"))
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)
    group = opt.param_groups[0]
    assert group["fused"] or group["foreach"]
    assert opt.param_groups[1]["weight_decay"] == 0.0
    plain = make_optimizer(model, lr=1e-3, weight_decay=0.1, fused=False)
    assert plain.param_groups[0]["foreach"]


def test_wsd_is_flat_then_a_straight_line_to_the_floor():
    from buildlm.train.budget import wsd_decay

    top, floor = 1.0, 0.1
    assert [wsd_decay(p, top, floor, 0.25) for p in (0.0, 0.5, 0.75)] == [top] * 3
    assert wsd_decay(0.875, top, floor, 0.25) == pytest.approx(0.55)  # halfway down the line
    assert wsd_decay(1.0, top, floor, 0.25) == pytest.approx(floor)
    assert wsd_decay(7.0, top, floor, 0.25) == pytest.approx(floor)  # past the end: the floor
    assert wsd_decay(0.0, top, floor, 1.0) == top and wsd_decay(0.5, top, floor, 1.0) == pytest.approx(0.55)
