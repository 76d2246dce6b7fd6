"""Held-out accuracy of *sampled* replies, before and after GRPO (issue 22's figures).

    python benchmarks/grpo_heldout.py RUN TASKS [TEMPERATURE]
    python benchmarks/grpo_heldout.py /tmp/grpo/sft speaker,count,parity 0.7
    python benchmarks/grpo_heldout.py --tiny   # the bundled model, 4 speaker prompts (CI)

For each bundled instruct task: 8 replies per test prompt (alpaca template, seeded), sampled and
checked as GRPO's rollouts are (`buildlm.finetune.grpo.GRPOTask.rollout`); prints the share that
is right. Greedy accuracy is what ``buildlm finetune grpo`` reports itself.
"""

import sys

import torch

from buildlm.data.bundled_tasks import load_bundled
from buildlm.data.records import records_from_dicts
from buildlm.eval.verifiers import verifier_for
from buildlm.finetune.grpo import GRPOConfig, GRPOTask
from buildlm.finetune.grpo_rollout import make_prompts
from buildlm.infer.load import load_model


def main(run: str, tasks: str, temperature: float = 0.7, limit: int | None = None) -> None:
    torch.set_num_threads(1)
    model, tokenizer = load_model(run, dtype=torch.float32)
    for task_name in tasks.split(","):
        records = records_from_dicts(load_bundled(f"instruct-tasks:{task_name}")["test"], "test")
        prompts, _ = make_prompts(records, "alpaca", tokenizer, model.config.context_length - 16)
        prompts = prompts[:limit]
        config = GRPOConfig(
            group_size=8, prompts_per_step=len(prompts), max_new_tokens=16, temperature=temperature
        )
        task = GRPOTask(
            model, tokenizer, None, verifier_for("exact"), prompts, None, config, seed=12345
        )
        batch = task.rollout(0)[0]
        print(f"{run} {task_name} T={temperature} sampled accuracy {float(batch.correct.float().mean()):.3f} "
              f"({len(prompts)} prompts x 8)")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:] == ["--tiny"]:
        from pathlib import Path

        import buildlm

        main(str(Path(buildlm.__file__).parent / "pretrained" / "shakespeare-small"), "speaker", limit=4)
    elif len(sys.argv) in (3, 4):
        main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.7)
    else:
        sys.exit(__doc__)
