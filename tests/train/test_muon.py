"""Muon: Newton-Schulz orthogonalisation against an SVD, the update against torch.optim.Muon,
the AdamW groups against torch.optim.AdamW, and which parameters go where."""

import pytest
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.train.muon import NS_CUBIC, Muon, hidden_matrices, muon_param_groups, orthogonalize
from buildlm.train.optim import make_optimizer, set_lr


def polar(m: torch.Tensor) -> torch.Tensor:
    """U V^T from the SVD m = U S V^T: the nearest (semi-)orthogonal matrix."""
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    return u @ vh


@pytest.mark.parametrize("shape", [(16, 16), (12, 40), (40, 12), (3, 8, 20)], ids=str)
def test_cubic_newton_schulz_converges_to_the_svd_polar_factor(shape):
    torch.manual_seed(0)
    m = torch.randn(*shape, dtype=torch.float64)
    got = orthogonalize(m, steps=60, coefficients=NS_CUBIC)
    torch.testing.assert_close(got, polar(m), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32)], ids=str)
def test_five_quintic_steps_give_an_approximately_orthogonal_update(shape):
    """Not exactly U V^T: the same singular vectors, singular values pushed into ~[0.5, 1.2]."""
    torch.manual_seed(1)
    m = torch.randn(*shape)
    got = orthogonalize(m)
    s = torch.linalg.svdvals(got)
    assert s.min() > 0.5 and s.max() < 1.25, s
    p = polar(m)
    cosine = (got * p).sum() / (got.norm() * p.norm())
    assert cosine > 0.98
    # the raw matrix is far from orthogonal: its singular values spread widely
    raw = torch.linalg.svdvals(m / m.norm())
    assert raw.max() / raw.min() > 3


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="this PyTorch has no torch.optim.Muon")
@pytest.mark.parametrize("shape", [(24, 40), (40, 24)], ids=str)
def test_muon_steps_equal_torch_optim_muon(shape):
    """Same weights, same gradients, three steps: equal weights (PyTorch iterates in bf16,
    so ours does too here; the difference left is bf16 rounding of different op groupings)."""
    torch.manual_seed(2)
    w0 = torch.randn(*shape)
    grads = [torch.randn(*shape) for _ in range(3)]
    ours_w, ref_w = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours = Muon([dict(params=[ours_w], muon=True)], lr=0.02, weight_decay=0.1, ns_dtype=torch.bfloat16)
    ref = torch.optim.Muon([ref_w], lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    for g in grads:
        ours_w.grad, ref_w.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    moved = (ref_w.detach() - w0).abs().max()
    assert moved > 0.01
    torch.testing.assert_close(ours_w, ref_w, atol=0.03 * float(moved), rtol=0)


def test_adamw_groups_equal_torch_adamw():
    torch.manual_seed(3)
    w0, b0 = torch.randn(8, 5), torch.randn(5)
    ours_p = [w0.clone().requires_grad_(), b0.clone().requires_grad_()]
    ref_p = [w0.clone().requires_grad_(), b0.clone().requires_grad_()]
    groups = lambda ps: [dict(params=[ps[0]], weight_decay=0.1), dict(params=[ps[1]], weight_decay=0.0)]  # noqa: E731
    ours = Muon(groups(ours_p), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    ref = torch.optim.AdamW(groups(ref_p), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    for step in range(5):
        g = [torch.randn(8, 5), torch.randn(5)]
        for p, q, gi in zip(ours_p, ref_p, g, strict=True):
            p.grad, q.grad = gi.clone(), gi.clone()
        ours.step()
        ref.step()
        for p, q in zip(ours_p, ref_p, strict=True):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=f"step {step}")


def test_hidden_matrices_go_to_muon_and_the_rest_to_adamw():
    config = ModelConfig.preset(
        "tiny", vocab_size=64, context_length=16, n_heads=4, n_kv_heads=2, n_experts=4,
        n_active_experts=2, moe_d_ff=16, tie_embeddings=False,
    )  # fmt: skip
    model = GPT(config)
    hidden = hidden_matrices(model)
    d = config.head_dim
    assert hidden["blocks.0.attn.qkv.weight"] == [4 * d, 2 * d, 2 * d]  # q, k, v apart
    assert hidden["blocks.0.attn.proj.weight"] is None
    assert "blocks.0.mlp.experts.w_up" in hidden or "blocks.0.mlp.experts.w_fc" in hidden  # 3-D
    for name in ("tok_emb.weight", "lm_head.weight", "blocks.0.mlp.router.weight"):
        assert name not in hidden
    assert not any(name.endswith("bias") or "norm" in name for name in hidden)
    groups = muon_param_groups(model, lr=1e-3, muon_lr=0.02, weight_decay=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once
    muon = [g for g in groups if g.get("muon")]
    assert sum(len(g["params"]) for g in muon) == len(hidden)
    # one schedule drives both rates; the decay per step is lr * wd for both kinds
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1, optimizer="muon", muon_lr=0.02)
    set_lr(opt, 5e-4)
    for g in opt.param_groups:
        expect = 0.01 if g["muon"] else 5e-4
        assert g["lr"] == pytest.approx(expect)
        assert g["lr"] * g["weight_decay"] == pytest.approx(5e-4 * 0.1 if g["weight_decay"] else 0)


def test_a_muon_step_trains_every_expert_and_keeps_the_qkv_blocks_apart():
    torch.manual_seed(4)
    config = ModelConfig.preset("tiny", vocab_size=64, context_length=16, n_experts=4, n_active_experts=2, moe_d_ff=16)
    model = GPT(config)
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.0, optimizer="muon")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    idx = torch.randint(0, 64, (4, 16))
    loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, 1).flatten())
    loss.backward()
    opt.step()
    qkv = "blocks.0.attn.qkv.weight"
    step = (before[qkv] - model.get_parameter(qkv)) / 0.02  # muon_lr x (an update of scale 1)
    kv_rows = config.n_kv_heads * config.head_dim
    q_rows = config.n_heads * config.head_dim
    # the first step's momentum is the gradient itself, with Nesterov (1 + 0.95) x it; each of
    # q, k, v orthogonalised alone (the stacked matrix orthogonalised whole differs)
    u = model.get_parameter(qkv).grad * 1.95
    expected = torch.cat([orthogonalize(b) for b in u.split([q_rows, kv_rows, kv_rows])])
    torch.testing.assert_close(step, expected, atol=1e-4, rtol=1e-3)
    assert not torch.allclose(orthogonalize(u), expected, atol=1e-2)
    for name in ("w_fc", "w_proj"):  # the stacked experts (GELU): every one moved
        key = f"blocks.0.mlp.experts.{name}"
        moved = model.get_parameter(key) - before[key]
        assert (moved.flatten(1).abs().amax(dim=1) > 0).all(), name

def test_bad_settings_are_one_line_errors():
    from buildlm.train.config import TrainConfig

    with pytest.raises(ValueError, match="unknown train.optimizer 'sgd'"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="use --train.distributed ddp"):
        TrainConfig(optimizer="muon", distributed="fsdp")
    with pytest.raises(ValueError, match="Muon groups take matrices"):
        Muon([dict(params=[torch.zeros(3, requires_grad=True)], muon=True)])
