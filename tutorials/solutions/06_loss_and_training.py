"""Worked answers for tutorials/06_loss_and_training.ipynb, one section per exercise.

Load one into its cell with ``%load -s NAME solutions/06_loss_and_training.py``.
"""

# %% exercise: lr_schedule
import math


def lr_schedule(step, lr, min_lr, warmup_steps, max_steps):
    """Linear warmup to lr, cosine decay to min_lr at max_steps, then min_lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


# %% exercise: param_groups
def param_groups(model, weight_decay):
    """Matrices and embeddings (dim >= 2) decay; biases and norm gains (dim 1) do not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# %% exercise: training_loop
import torch
import torch.nn.functional as F

from buildlm.data.dataset import RandomWindowBatches


def train(model, train_ids, cfg):
    """cfg.max_steps optimizer steps; returns the loss of every step."""
    batches = RandomWindowBatches(train_ids, cfg.batch_size, cfg.context_length, seed=cfg.seed)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8
    )
    model.train()
    losses = []
    for step in range(cfg.max_steps):
        lr = lr_schedule(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for _ in range(cfg.grad_accum_steps):
            x, y = next(batches)  # (B, T) inputs and next-token targets
            logits = model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            (loss / cfg.grad_accum_steps).backward()  # gradients add up over micro-batches
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total / cfg.grad_accum_steps)
    return losses


@torch.no_grad()
def evaluate(model, val_ids, cfg):
    """Mean loss over the first cfg.eval_batches validation batches (always the same ones)."""
    batches = RandomWindowBatches(val_ids, cfg.batch_size, cfg.context_length, seed=cfg.seed + 1)
    model.eval()
    losses = []
    for k in range(cfg.eval_batches):
        x, y = batches.batch_at(k)
        logits = model(x)
        losses.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item())
    model.train()
    return sum(losses) / len(losses)
