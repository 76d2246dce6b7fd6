"""DPO: the loss equals its formula, starts at log 2, and training raises the reward margin."""

import math

import pytest
import torch
import torch.nn.functional as F

from buildlm.data.instruct import IGNORE
from buildlm.finetune.dpo import (
    DPOConfig,
    PreferencePair,
    collate_pairs,
    dpo_loss,
    run_dpo,
    sequence_logprobs,
)
from buildlm.finetune.run import FinetuneData
from buildlm.model.lora import LoRAConfig


def test_dpo_loss_equals_the_direct_formula():
    pi_c, pi_r = torch.tensor([-3.0, -7.5, -1.2]), torch.tensor([-4.0, -6.0, -9.9])
    ref_c, ref_r = torch.tensor([-3.5, -7.0, -2.0]), torch.tensor([-3.9, -6.4, -8.0])
    beta = 0.3
    out = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
    direct = [
        -math.log(1 / (1 + math.exp(-beta * ((a - b) - (c - d)))))
        for a, b, c, d in zip(pi_c.tolist(), ref_c.tolist(), pi_r.tolist(), ref_r.tolist(), strict=True)
    ]
    assert float(out.loss) == pytest.approx(sum(direct) / 3, rel=1e-6)
    torch.testing.assert_close(out.chosen_rewards, beta * (pi_c - ref_c))
    torch.testing.assert_close(out.margins, beta * ((pi_c - ref_c) - (pi_r - ref_r)))


def test_policy_equal_to_reference_gives_log_2_and_zero_margin():
    logps = torch.tensor([-3.0, -10.0]), torch.tensor([-1.0, -20.0])
    out = dpo_loss(*logps, *logps, beta=0.1)
    assert float(out.loss) == pytest.approx(math.log(2))
    assert out.margins.tolist() == [0.0, 0.0]


def test_sequence_logprobs_sum_only_the_answer_tokens():
    pair = PreferencePair([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4], [1, 2, 5], [IGNORE, IGNORE, 5])
    batch = collate_pairs([pair])  # x, y: (2, 3); the rejected row is padded
    assert batch.y.tolist() == [[IGNORE, 3, 4], [IGNORE, 5, IGNORE]]
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    logp = F.log_softmax(logits, dim=-1)
    expected = torch.stack([logp[0, 1, 3] + logp[0, 2, 4], logp[1, 1, 5]])
    torch.testing.assert_close(sequence_logprobs(logits, batch.y), expected)


@pytest.mark.parametrize("rank", [0, 4])
def test_dpo_raises_the_reward_margin(tiny_base, ft_train, tmp_path, rank):
    """Full fine-tuning (frozen copy as reference) and LoRA (adapters switched off as reference).

    The margin is measured on the pairs trained on (given as the test file): the tiny model is
    not expected to generalise in 20 steps, only to optimise the objective.
    """
    from buildlm.data.bundled_tasks import load_bundled
    from buildlm.data.records import write_jsonl

    train_pairs = write_jsonl(load_bundled("instruct-prefs:parity")["train"][:96], tmp_path / "pairs.jsonl")
    result = run_dpo(
        str(tiny_base),
        FinetuneData(data=str(train_pairs), val_fraction=0.0, test_data=str(train_pairs)),
        ft_train(max_steps=20, lr=3e-3 if rank == 0 else 3e-2, eval_interval=10),
        DPOConfig(template="{instruction} {input} =", beta=0.5),
        LoRAConfig(rank=rank, alpha=2 * rank),
        out=str(tmp_path / "dpo"),
        log=lambda m: None,
    )
    before, after = result.metrics["before"], result.metrics["after"]
    assert before["val_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert before["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert after["reward_margin"] > 0.05 and after["reward_accuracy"] > 0.55, after
    assert after["val_loss"] < math.log(2) - 0.005  # margins 0.08 to 0.2 over seeds 0 to 3
    assert (tmp_path / "dpo" / "adapter.safetensors").is_file() == (rank > 0)


def test_logits_at_answer_positions_only_give_the_same_logprobs_and_sft_loss():
    from buildlm.finetune.dpo import model_sequence_logprobs
    from buildlm.finetune.instruct import InstructTask, sft_loss
    from buildlm.model import GPT, ModelConfig

    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=50, context_length=16, d_model=32, n_layers=1, n_heads=2))
    pairs = [
        PreferencePair([1, 2, 3, 4, 5], [IGNORE, IGNORE, IGNORE, 4, 5], [1, 2, 3, 9], [IGNORE, IGNORE, IGNORE, 9]),
        PreferencePair([7, 8, 6], [IGNORE, 8, 6], [7, 8, 11, 12, 13], [IGNORE, 8, 11, 12, 13]),
    ]
    batch = collate_pairs(pairs)
    torch.testing.assert_close(model_sequence_logprobs(model, batch.x, batch.y), sequence_logprobs(model(batch.x), batch.y))
    task_loss = InstructTask.loss(None, model, batch)  # an SFT batch has the same x, y fields
    torch.testing.assert_close(task_loss, sft_loss(model(batch.x), batch.y))
