"""Stage 8 of the learning path: fine-tuning a pretrained model.

Each method is a `buildlm.train.task.Task` (batches, a loss, an evaluation) run by the same
`buildlm.train.Trainer` as pretraining, so schedules, mixed precision, checkpoints and resuming
work the same. One method per file:

- ``run.py``: what every fine-tuning run shares: the starting model, data splits, LoRA or full
  training, the run folder, resuming one (``--resume RUN``, through `Trainer.load_state`);
- ``classify.py``: a GPT with an n-classes head (``buildlm finetune classify``);
- ``instruct.py``: instruction tuning with the loss on response tokens (``finetune instruct``);
- ``dpo.py``: preference tuning against a frozen reference (``finetune dpo``);
- ``grpo_loss.py``: GRPO's arithmetic: group advantages, the clipped token-level objective, k3 KL;
- ``grpo_rollout.py``: GRPO's rollouts: prompts, sampled completions, their tensors and log-probs;
- ``grpo.py``: reinforcement learning with verifiable rewards, as a Task (``finetune grpo``);
- ``grpo_run.py``: a GRPO run from start to end (before/after accuracy);
- ``cli.py``: ``buildlm finetune``; ``classify_cli.py``: ``buildlm classify``.

A new fine-tuning method is one more file here (its config, its task, its ``run_*``) and its test.
"""
