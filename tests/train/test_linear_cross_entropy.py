"""The fused LM head + cross-entropy: the loss and gradients of F.cross_entropy on F.linear."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from buildlm.model import GPT, ModelConfig
from buildlm.train.config import TrainConfig
from buildlm.train.linear_cross_entropy import linear_cross_entropy
from buildlm.train.trainer import Trainer
from buildlm.train.windows import TrainData


def inputs(n=70, d=48, v=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g)
    weight = torch.randn(v, d, generator=g) * 0.3
    targets = torch.randint(0, v, (n,), generator=g)
    targets[[3, 40]] = -100  # ignored rows: no loss, no gradient, not in the mean
    return hidden, weight, targets


def loss_and_grads(fn, hidden, weight, targets, dtype=None, upstream=3.0):
    """fn's loss and the gradients of upstream * loss, under autocast to dtype (None: off)."""
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = fn(h, w, targets)
    (loss * upstream).backward()
    return [loss.detach().double(), h.grad.double(), w.grad.double()]


def plain(h, w, t):
    return F.cross_entropy(F.linear(h, w).float(), t)


def fused(chunk_rows):
    return lambda h, w, t: linear_cross_entropy(h, w, t, chunk_rows=chunk_rows)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("chunk_rows", [1, 16, 32, 1000])  # 16 does not divide 70 rows
def test_fp32_equals_cross_entropy_of_the_logits(chunk_rows):
    hidden, weight, targets = inputs()
    ours = loss_and_grads(fused(chunk_rows), hidden, weight, targets)
    ref = loss_and_grads(plain, hidden, weight, targets)
    for a, b in zip(ours, ref, strict=True):
        assert rel_err(a, b) < 1e-5


def test_bf16_is_as_close_to_float64_as_autocasts_own_loss():
    """Under bf16 autocast both paths round; ours must be no further from the exact values."""
    hidden, weight, targets = inputs()
    exact = loss_and_grads(plain, hidden.double(), weight.double(), targets)
    ours = loss_and_grads(fused(16), hidden, weight, targets, torch.bfloat16)
    ref = loss_and_grads(plain, hidden, weight, targets, torch.bfloat16)
    for name, a, b, e in zip(["loss", "grad hidden", "grad weight"], ours, ref, exact, strict=True):
        assert rel_err(b, e) > 1e-5, f"{name}: the reference path should show bf16 rounding"
        assert rel_err(a, e) <= 1.5 * rel_err(b, e) + 1e-6, name
    # ignored rows get no gradient at all
    assert ours[1][3].abs().max() == 0 and ours[1][40].abs().max() == 0


def test_a_wrong_target_changes_the_loss():
    """The test above can fail: a different target gives a different loss and gradient."""
    hidden, weight, targets = inputs()
    moved = targets.clone()
    moved[0] = (moved[0] + 1) % weight.shape[0]
    a = loss_and_grads(fused(16), hidden, weight, targets)
    b = loss_and_grads(fused(16), hidden, weight, moved)
    assert rel_err(a[0], b[0]) > 1e-4 and rel_err(a[1], b[1]) > 1e-3


def test_bad_shapes_and_dtypes_are_clear_errors():
    hidden, weight, targets = inputs()
    with pytest.raises(ValueError, match="disagree"):
        linear_cross_entropy(hidden, weight, targets[:-1])
    with pytest.raises(ValueError, match="cast one"):
        linear_cross_entropy(hidden.bfloat16(), weight, targets)


def test_head_weight_only_where_the_head_is_a_plain_product():
    tied = GPT(ModelConfig.preset("tiny", vocab_size=64, context_length=16))
    assert tied.plain_head_weight() is tied.tok_emb.weight
    untied = GPT(ModelConfig.preset("tiny", vocab_size=64, context_length=16, tie_embeddings=False))
    assert untied.plain_head_weight() is untied.lm_head.weight
    capped = GPT(ModelConfig.preset("tiny", vocab_size=64, context_length=16, final_logit_softcap=30.0))
    assert capped.plain_head_weight() is None
    x = torch.randint(0, 64, (2, 16))
    for model in (tied, untied):
        torch.testing.assert_close(model(x), F.linear(model.hidden_states(x), model.plain_head_weight()))


def test_bf16_trainer_step_matches_the_unfused_loss():
    """The Trainer's bf16 loss goes through the fused head; loss and gradients agree with the
    model's logits under autocast, within bf16 rounding."""
    torch.manual_seed(0)
    vocab = 300
    model = GPT(ModelConfig.preset("tiny", vocab_size=vocab, context_length=32))
    tokens = np.random.default_rng(0).integers(0, vocab, 4000).astype(np.uint16)
    config = TrainConfig(
        max_steps=1, batch_size=4, precision="bf16", device="cpu", num_threads=1,
        progress=False, tensorboard=False, peak_flops=1e12, time_budget_s=None,
    )  # fmt: skip
    trainer = Trainer(model, config, TrainData(tokens[:3000], tokens[3000:], val_bytes=4000))
    assert trainer._fused_head_weight() is model.tok_emb.weight
    x = torch.randint(0, vocab, (4, 32))
    y = torch.randint(0, vocab, (4, 32))

    def run(loss_fn):
        model.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    def unfused():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    loss_a, grads_a = run(lambda: trainer._loss(x, y))
    loss_b, grads_b = run(unfused)
    assert abs(float(loss_a - loss_b)) < 2e-3 * float(loss_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        assert rel_err(a, b) < 0.05
    cos = F.cosine_similarity(torch.cat([g.flatten() for g in grads_a]), torch.cat([g.flatten() for g in grads_b]), 0)
    assert cos > 0.999
