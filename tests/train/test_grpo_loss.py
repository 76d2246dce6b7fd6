"""GRPO's arithmetic against hand-computed values and a per-token loop written independently."""

import math

import pytest
import torch

from buildlm.finetune.grpo_loss import clipped_policy_loss, group_advantages, k3_kl


def test_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 0.0, 1.0, 1.0]])
    mean_only = group_advantages(rewards, "mean")
    assert mean_only.tolist() == [[0.5, -0.5, -0.5, 0.5], [1.0, -1.0, 0.0, 0.0]]
    std0 = math.sqrt(4 * 0.25 / 3)  # unbiased std of (1, 0, 0, 1)
    std1 = math.sqrt(2 / 3)  # of (2, 0, 1, 1)
    a, b = 0.5 / (std0 + 1e-4), 1 / (std1 + 1e-4)
    expected = torch.tensor([[a, -a, -a, a], [b, -b, 0.0, 0.0]])
    assert torch.allclose(group_advantages(rewards), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["mean", "mean_std"])
@pytest.mark.parametrize("value", [0.0, 1.0, 0.3, 1.1])
def test_equal_rewards_give_zero_advantages_not_nan(mode, value):
    rewards = torch.tensor([[value] * 5, [0.0, 1.0, 0.0, 0.0, 0.0]])
    adv = group_advantages(rewards, mode)
    assert torch.isfinite(adv).all()
    assert adv[0].tolist() == [0.0] * 5 and adv[1].abs().sum() > 0


def test_advantages_refuse_groups_of_one_and_unknown_modes():
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="unknown advantage mode"):
        group_advantages(torch.zeros(3, 2), "median")


def test_k3_is_nonnegative_zero_at_equality_and_matches_by_hand():
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(64, 10), -1)
    ref = torch.log_softmax(torch.randn(64, 10), -1)
    assert (k3_kl(logp, ref) >= 0).all()
    assert k3_kl(logp, logp).abs().max() == 0
    by_hand = 0.5 - math.log(0.5) - 1  # ref/pi = 0.25/0.5
    assert float(k3_kl(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25)))) == pytest.approx(
        by_hand
    )
    # its mean under pi is KL(pi || ref): exact when averaged with pi's weights over the vocabulary
    p = logp.exp()
    exact_kl = (p * (logp - ref)).sum(-1)
    assert torch.allclose((p * k3_kl(logp, ref)).sum(-1), exact_kl, atol=1e-5)


def reference_loss(logp, old, adv, mask, eps_low, eps_high, ref=None, beta=0.0):
    """The DAPO loss written as loops over tokens, in float64 Python numbers."""
    total, count, clipped = 0.0, 0, 0
    for b in range(len(logp)):
        for t in range(len(logp[b])):
            if not mask[b][t]:
                continue
            ratio = math.exp(logp[b][t] - old[b][t])
            low, high = 1 - eps_low, 1 + eps_high
            term = min(ratio * adv[b], max(low, min(high, ratio)) * adv[b])
            if ref is not None:
                d = ref[b][t] - logp[b][t]
                term -= beta * (math.exp(d) - d - 1)
            total -= term
            count += 1
            clipped += (ratio > high and adv[b] > 0) or (ratio < low and adv[b] < 0)
    return total / count, clipped / count


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_clipped_loss_equals_a_loop_over_tokens(beta):
    torch.manual_seed(1)
    B, T = 4, 7
    old = torch.log(torch.rand(B, T) * 0.9 + 0.05)
    logp = old + 0.4 * torch.randn(B, T)  # ratios well outside the clip range too
    ref = old + 0.3 * torch.randn(B, T)
    adv = torch.tensor([1.5, -0.7, 0.0, 0.3])
    mask = torch.rand(B, T) > 0.3
    out = clipped_policy_loss(logp, old, adv, mask, 0.2, 0.28, ref, beta)
    want, clip = reference_loss(
        logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.28, ref.tolist(), beta
    )
    assert float(out.loss) == pytest.approx(want, rel=1e-5)
    assert float(out.clip_fraction) == pytest.approx(clip) and 0 < clip < 1
    assert out.tokens == int(mask.sum())


def test_clip_fraction_and_gradients_by_hand():
    # one row, three tokens: ratio 2 (A>0: clipped), ratio 0.5 (A>0: not clipped), ratio 1
    old = torch.log(torch.tensor([[0.25, 0.5, 0.5]]))
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.5]])).requires_grad_()
    out = clipped_policy_loss(
        logp, old, torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool), 0.2, 0.28
    )
    assert float(out.clip_fraction) == pytest.approx(1 / 3)
    assert float(out.loss.detach()) == pytest.approx(-(1.28 + 0.5 + 1.0) / 3)
    out.loss.backward()
    # d/dlogp of -ratio*A/3 is -ratio/3 where unclipped, 0 where clipped
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.5 / 3, -1 / 3]]))


def test_first_pass_ratio_is_one_and_the_gradient_is_the_plain_policy_gradient():
    torch.manual_seed(2)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    targets = torch.randint(0, 11, (3, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([0.8, -1.2, 0.4])

    def logp_of(lg):
        return torch.log_softmax(lg, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    logp = logp_of(logits)
    out = clipped_policy_loss(logp, logp.detach(), adv, mask, 0.2, 0.28)
    assert float(out.ratio) == 1.0 and float(out.clip_fraction) == 0.0
    (grad,) = torch.autograd.grad(out.loss, logits)
    plain = -(adv[:, None] * logp_of(logits) * mask).sum() / mask.sum()
    (want,) = torch.autograd.grad(plain, logits)
    assert torch.allclose(grad, want, atol=1e-7) and grad.abs().sum() > 0


def test_pieces_with_the_whole_batch_count_add_up_to_the_batch_loss():
    torch.manual_seed(3)
    logp, old = torch.randn(4, 6), torch.randn(4, 6)
    adv, mask = torch.randn(4), torch.rand(4, 6) > 0.4
    whole = clipped_policy_loss(logp, old, adv, mask).loss
    n = int(mask.sum())
    halves = sum(
        clipped_policy_loss(logp[s], old[s], adv[s], mask[s], num_tokens=n).loss
        for s in (slice(0, 2), slice(2, 4))
    )
    assert float(halves) == pytest.approx(float(whole), rel=1e-6)
