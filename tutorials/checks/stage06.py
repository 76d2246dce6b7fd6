"""Checks for stage 6 (the loss and training): your loop against buildlm's ``Trainer``.

The last check is the strict one: your ``train`` and buildlm's ``Trainer`` start from the same
weights, read the same seeded batches and must report the same loss at every step. Where they
part, the message says at which step and what usually causes a difference there.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.train import TrainConfig, TrainData, Trainer
from buildlm.train.optim import decay_parameter_names, lr_at


def check_param_groups(param_groups) -> None:
    """param_groups(model, weight_decay): matrices decay, biases and norm gains do not."""
    config = ModelConfig(vocab_size=50, context_length=16, d_model=16, n_heads=2, n_layers=2)
    model = GPT(config)
    groups = param_groups(model, 0.1)
    assert isinstance(groups, list) and len(groups) == 2, (
        f"expected a list of two dicts (decay, no decay), got {type(groups).__name__} of "
        f"{len(groups) if hasattr(groups, '__len__') else '?'}"
    )
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = decay_parameter_names(model)  # buildlm's split
    for group, expected, wd in [(groups[0], decay, 0.1), (groups[1], no_decay, 0.0)]:
        got = sorted(names.get(id(p), "<not a parameter of the model>") for p in group["params"])
        assert got == sorted(expected), (
            f"the group with weight_decay={wd} should hold {sorted(expected)}\ngot {got}\nHint: "
            "p.dim() >= 2 (weight matrices, embeddings) decays; 1-D tensors (biases, norm gains) "
            "do not. model.named_parameters() lists a tied weight once."
        )
        assert group.get("weight_decay") == wd, (
            f"group {'0' if wd else '1'} has weight_decay={group.get('weight_decay')}, expected {wd}"
        )
    print(f"param_groups: {len(decay)} tensors decay, {len(no_decay)} do not, as in buildlm")


def check_lr_schedule(lr_schedule) -> None:
    """lr_schedule(step, lr, min_lr, warmup_steps, max_steps) equals buildlm's lr_at."""
    for args in [(3e-3, 3e-4, 15, 120), (1e-3, 0.0, 100, 1000), (1.0, 0.1, 0, 10), (5e-3, 5e-4, 3, 4)]:
        for step in list(range(0, args[3] + 5)) + [args[3] * 3]:
            got, expected = lr_schedule(step, *args), lr_at(step, *args)
            assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-15), (
                f"lr_schedule({step}, lr={args[0]}, min_lr={args[1]}, warmup_steps={args[2]}, "
                f"max_steps={args[3]}) = {got}, expected {expected}. Hint: warmup gives "
                "lr * (step + 1) / warmup_steps (step 0 already learns); then progress = "
                "(step - warmup) / (max_steps - warmup) and min_lr + 0.5 * (1 + cos(pi * "
                "progress)) * (lr - min_lr); min_lr from max_steps on."
            )
    print("lr_schedule: equal to buildlm's lr_at at every step of four schedules")


def check_training_loop(train, evaluate, model: GPT, data: TrainData, config: TrainConfig):
    """Your ``train`` + ``evaluate`` against ``Trainer`` from the same weights, step for step.

    Returns (your losses, Trainer's losses) for plotting.
    """
    start = copy.deepcopy(model.state_dict())
    cfg = replace(config, peak_flops=config.peak_flops or 1e11, progress=False)
    mine = copy.deepcopy(model)
    torch.manual_seed(cfg.seed)
    my_losses = train(mine, data.train, replace(cfg))
    my_val = evaluate(mine, data.val, replace(cfg))

    reference = copy.deepcopy(model)
    reference.load_state_dict(start)
    trainer = Trainer(reference, replace(cfg), data, log=lambda *a, **k: None)
    expected = trainer.fit().losses
    expected_val = trainer.evaluate()["val_loss"]

    assert isinstance(my_losses, (list, tuple)) and len(my_losses) == len(expected), (
        f"train should return one loss per optimizer step: {len(expected)} floats, got "
        f"{len(my_losses) if hasattr(my_losses, '__len__') else type(my_losses).__name__}"
    )
    got = np.array([float(v) for v in my_losses])
    gaps = np.abs(got - np.array(expected))
    if gaps.max() > 1e-4:
        step = int(np.argmax(gaps > 1e-4))
        why = {
            0: "step 0 differs: the first batch or the loss itself. Batches come from "
            "RandomWindowBatches(train, batch_size, context_length, seed=cfg.seed), one next() "
            "per micro-batch; the loss is F.cross_entropy over (B*T, V) logits; report the mean "
            "of the micro-batch losses, not their sum.",
            1: "step 1 differs: the first update. Check the learning rate of step 0 "
            "(lr_schedule(0, ...)), AdamW's betas=(cfg.beta1, cfg.beta2) and eps=1e-8, the two "
            "parameter groups with weight_decay, loss / grad_accum_steps before backward, "
            "clipping to cfg.grad_clip before optimizer.step(), and zero_grad after.",
        }.get(step, f"step {step} differs: check clipping to cfg.grad_clip (it only acts once "
                    "the gradient norm exceeds it), loss / grad_accum_steps before backward, and "
                    f"the lr of each step (warmup is {cfg.warmup_steps} steps), set on every group.")  # fmt: skip
        raise AssertionError(
            f"your losses part from Trainer's at step {step}: yours "
            f"{np.round(got[max(0, step - 2) : step + 3], 5).tolist()}, Trainer's "
            f"{np.round(expected[max(0, step - 2) : step + 3], 5).tolist()}.\nHint: {why}"
        )
    assert math.isclose(float(my_val), expected_val, abs_tol=1e-4), (
        f"evaluate gave {float(my_val):.5f}, Trainer.evaluate {expected_val:.5f} on the same "
        "weights. Hint: batches RandomWindowBatches(val, batch_size, context_length, "
        "seed=cfg.seed + 1).batch_at(k) for k < cfg.eval_batches, the model in eval() mode "
        "under torch.no_grad(), the mean of the batch losses."
    )
    print(f"train: {len(expected)} steps, every loss equal to Trainer's (largest gap "
          f"{gaps.max():.1e}); evaluate: {float(my_val):.4f} = Trainer's {expected_val:.4f}")
    return got.tolist(), list(expected)
