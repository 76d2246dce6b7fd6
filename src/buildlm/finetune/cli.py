"""``buildlm finetune``: turn a pretrained model into a classifier, an instruction follower, or
a model tuned to preferences (DPO).

    buildlm finetune classify --model RUN --data shakespeare-plays
    buildlm finetune instruct --model RUN --data instruct-tasks --lora.rank 8
    buildlm finetune dpo      --model SFT_RUN --data instruct-prefs --lora.rank 8
    buildlm finetune grpo     --config grpo --model SFT_RUN --data instruct-tasks:parity
    buildlm finetune instruct --resume RUN          (continue a killed run from its newest checkpoint)
    buildlm finetune data NAME DIR          (write a bundled dataset's splits as JSONL)

Like ``buildlm train``, settings are dataclass fields set from a YAML file (``--config
my.yaml``, or a bundled one by name: ``--config instruct``) and/or flags: ``--train.*`` (the same `TrainConfig`: steps,
batch size, learning rate, ...), ``--lora.*`` (`LoRAConfig`; ``--lora.rank 0`` trains every
weight) and the task's own group (``--classify.*``, ``--instruct.*``, ``--dpo.*``, ``--grpo.*``). ``--model``
is a buildlm run or checkpoint folder, or a Hugging Face folder (GPT-2, Llama, Qwen).

``--resume RUN`` (every task) continues a run exactly as ``buildlm train --resume`` does: the
same `Trainer.load_state` puts back the weights (and LoRA adapters), the AdamW moments, the
position in the shuffled examples, the RNG, the step and the learning-rate schedule, and
metrics.csv drops the rows written after the checkpoint. The run's saved settings are the
defaults; flags given now override them (``--train.max_steps 600`` trains it further).
"""

from __future__ import annotations

import sys

FINETUNE_DATA_FIELDS = ("data", "val_data", "test_data", "val_fraction", "test_fraction", "max_train_examples", "fields")

# Fine-tuning defaults that differ from pretraining: a fixed number of steps (no time budget),
# smaller batches of whole examples, a lower peak rate without weight decay, no text samples,
# and a checkpoint (only the newest kept) at each evaluation and at the end, so that a run
# killed on the way can be resumed.
COMMON_DEFAULTS = {
    "train.max_steps": 300,
    "train.time_budget_s": None,
    "train.batch_size": 16,
    "train.lr": 1e-3,
    "train.min_lr": 1e-4,
    "train.warmup_steps": 20,
    "train.weight_decay": 0.0,
    "train.eval_interval": 100,
    "train.log_interval": 10,
    "train.sample_interval": 0,
    "train.checkpoint_interval": 100,
    "train.keep_checkpoints": 1,
}
TASK_DEFAULTS = {
    "classify": {},
    "instruct": {},
    "dpo": {"train.lr": 5e-4, "train.min_lr": 5e-5, "train.max_steps": 200},
    # Reinforcement learning: small steps (the samples come from the policy itself), every
    # step's figures logged, an evaluation and a checkpoint now and then.
    "grpo": {
        "train.lr": 3e-4, "train.min_lr": 3e-4, "train.warmup_steps": 0, "train.max_steps": 100,
        "train.log_interval": 1, "train.eval_interval": 50, "train.checkpoint_interval": 50,
        "train.grad_clip": 1.0,
    },
}
DESCRIPTIONS = {
    "classify": "Fine-tune a classifier: the LM head is replaced by an n-classes head on the pooled "
    "hidden state. Data: text + label columns (CSV/TSV/JSONL/JSON/Parquet, also .gz/.zst) or 'shakespeare-plays'. "
    "Reports accuracy, per-class precision/recall/F1, a confusion-matrix PNG and the "
    "majority-class baseline.",
    "instruct": "Instruction tuning (SFT): loss on response tokens only. Data: Alpaca-style "
    "{instruction, input, output} or chat {messages} JSONL/JSON, or 'instruct-tasks'. Reports "
    "exact match on the test split before and after, generations saved as JSONL.",
    "dpo": "Preference tuning with DPO against a frozen reference (the starting model). Data: "
    "{instruction, input, chosen, rejected} or {messages, chosen, rejected} JSONL/JSON, or "
    "'instruct-prefs'. Reports the reward margin, reward accuracy and how often the model "
    "prefers the chosen answer, before and after.",
    "grpo": "Reinforcement learning with verifiable rewards (GRPO): per prompt, a group of sampled "
    "completions scored by a verifier, advantages within the group, a clipped token-level policy "
    "gradient (optional KL penalty against the starting model). Data: {prompt|question|instruction, "
    "answer} JSONL/JSON, or 'instruct-tasks'. Start from an instruction-tuned run; reports greedy "
    "accuracy on the test prompts before and after.",
}
TASKS = tuple(DESCRIPTIONS)
RESUMABLE = TASKS  # tasks whose runs continue from a checkpoint (--resume)


def _usage() -> str:
    lines = ["usage: buildlm finetune {classify,instruct,dpo,grpo,data} [options]", "", "tasks:"]
    lines += [f"  {name:<9} {DESCRIPTIONS[name].split(':')[0]}" for name in TASKS]
    lines += ["  data      write a bundled dataset's train/val/test splits as JSONL: data NAME DIR"]
    lines += ["", "`buildlm finetune <task> --help` shows a task's options."]
    return "\n".join(lines)


def task_config_class(task: str) -> type:
    if task == "classify":
        from buildlm.finetune.classify import ClassifyConfig

        return ClassifyConfig
    if task == "instruct":
        from buildlm.finetune.instruct import InstructConfig

        return InstructConfig
    if task == "grpo":
        from buildlm.finetune.grpo import GRPOConfig

        return GRPOConfig
    from buildlm.finetune.dpo import DPOConfig

    return DPOConfig


def build_parser(task: str):
    from jsonargparse import ActionConfigFile, ArgumentParser

    from buildlm.finetune.run import FinetuneData
    from buildlm.model.lora import LoRAConfig
    from buildlm.train.bundled_configs import bundled_names
    from buildlm.train.config import TrainConfig

    parser = ArgumentParser(prog=f"buildlm finetune {task}", description=DESCRIPTIONS[task], exit_on_error=False)
    parser.add_argument(
        "--config", action=ActionConfigFile,
        help="a YAML file of settings, or a bundled one by name: " + ", ".join(bundled_names("finetune")),
    )  # fmt: skip
    parser.add_argument(
        "--model", type=str, required=task not in RESUMABLE, default="",
        help="the starting model: a buildlm run or checkpoint folder, or a Hugging Face model folder "
        "(required unless --resume)",
    )  # fmt: skip
    if task in RESUMABLE:
        parser.add_argument(
            "--resume", type=str | None, default=None,
            help="continue a run of this task exactly: its folder (newest checkpoint) or one checkpoint "
            "folder; its saved settings are the defaults (flags given now override them)",
        )  # fmt: skip
    parser.add_argument(
        "--out", type=str | None, default=None,
        help="the run folder (default: <train.out_dir>/<train.name or task-date-time>)",
    )  # fmt: skip
    parser.add_class_arguments(FinetuneData, None, instantiate=False)
    parser.add_class_arguments(TrainConfig, "train", instantiate=False)
    parser.add_class_arguments(LoRAConfig, "lora", instantiate=False)
    parser.add_class_arguments(task_config_class(task), task, instantiate=False)
    parser.set_defaults({**COMMON_DEFAULTS, **TASK_DEFAULTS[task]})
    return parser


def parse(task: str, argv: list[str]):
    """(model, data, train, lora, task config, out) from the command line."""
    from buildlm.cli_parser import underscore_flags
    from buildlm.finetune.run import FinetuneData
    from buildlm.model.lora import LoRAConfig
    from buildlm.train.bundled_configs import resolve_config_args
    from buildlm.train.cli import _resume_target, parse_in_one_line
    from buildlm.train.config import TrainConfig

    argv = resolve_config_args(underscore_flags(argv), "finetune")
    parser = build_parser(task)
    target = _resume_target(argv) if task in RESUMABLE else None
    if target is not None:
        parser.set_defaults(saved_defaults(parser, target, task))
    cfg = parse_in_one_line(parser, argv)
    data = FinetuneData(**{k: getattr(cfg, k) for k in FinetuneData.__dataclass_fields__})
    train = TrainConfig(**vars(cfg.train))
    lora = LoRAConfig(**vars(cfg.lora))
    task_config = task_config_class(task)(**vars(getattr(cfg, task)))
    return cfg.model, data, train, lora, task_config, cfg.out


def resume_checkpoint(target: str, task: str):
    """The checkpoint ``--resume target`` continues, with one-line errors that name the fix: a
    missing folder, a folder with no checkpoint, a run of another task or of pretraining."""
    from pathlib import Path

    from buildlm import checkpoint_format
    from buildlm.train.checkpoint_health import resolve_resumable

    path = Path(target)
    if not path.exists():
        raise FileNotFoundError(
            f"--resume {target!r}: no such run folder; pass the folder of a `buildlm finetune {task}` run "
            "(or one of its checkpoint folders)"
        )
    if path.is_dir() and not (path / checkpoint_format.CONFIG).is_file() and not checkpoint_format.list_checkpoints(path):
        raise FileNotFoundError(
            f"--resume {target!r}: the folder holds no checkpoint (the run stopped before its first save, "
            f"or it is not a run folder); start the run again without --resume (--train.checkpoint_interval sets how often it saves)"
        )
    folder = resolve_resumable(path, set_aside_damaged=False)
    saved = checkpoint_format.read_config(folder)
    kind = (saved.get("finetune") or {}).get("task")
    if kind != task:
        how = f"`buildlm finetune {kind} --resume {target}`" if kind else f"`buildlm train --resume {target}`"
        what = f"a finetune {kind} run" if kind else "a pretraining run"
        raise ValueError(
            f"--resume {target!r} is {what}, not a finetune {task} one; resume it with {how}"
            + ("" if kind else f", or fine-tune from it with `buildlm finetune {task} --model {target}`")
        )
    return folder, saved


def saved_defaults(parser, target: str, task: str) -> dict:
    """The settings of the run ``target`` names (its newest checkpoint's config.json), as defaults."""
    _, saved = resume_checkpoint(target, task)
    block = saved.get("finetune") or {}
    flat = {"model": block.get("base_model")}
    for key, value in block.items():
        flat[key if key in FINETUNE_DATA_FIELDS else f"{task}.{key}"] = value
    for group in ("train", "lora"):
        for key, value in (saved.get(group) or {}).items():
            flat[f"{group}.{key}"] = value
    defaults = {}
    for key, value in flat.items():
        try:
            parser.get_default(key)
        except KeyError:  # not a setting (task, base_model), or one this version no longer has
            continue
        defaults[key] = value
    return defaults


def write_bundled(argv: list[str]) -> None:
    """``buildlm finetune data NAME DIR``: a bundled dataset's splits as DIR/{train,val,test}.jsonl."""
    from pathlib import Path

    from buildlm.data.bundled_tasks import list_bundled, load_bundled
    from buildlm.data.records import write_jsonl

    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print(f"usage: buildlm finetune data NAME DIR\n\nbundled datasets: {', '.join(list_bundled())}")
        if len(argv) != 2 and not (argv and argv[0] in ("-h", "--help")):
            raise SystemExit(2)
        return
    name, folder = argv
    for split, items in load_bundled(name).items():
        path = write_jsonl(items, Path(folder) / f"{split}.jsonl")
        print(f"{path}: {len(items)} examples")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    task, rest = argv[0], argv[1:]
    if task == "data":
        write_bundled(rest)
        return
    if task not in TASKS:
        raise ValueError(f"unknown fine-tuning task {task!r}; choose one of: {', '.join(TASKS)}, data")
    model, data, train, lora, task_config, out = parse(task, rest)

    def log(msg: str) -> None:
        print(msg, file=sys.stdout, flush=True)

    from buildlm.train.cli import _resume_target

    if task == "classify":
        from buildlm.finetune.classify import run_classify as run
    elif task == "instruct":
        from buildlm.finetune.instruct import run_instruct as run
    elif task == "dpo":
        from buildlm.finetune.dpo import run_dpo as run
    else:
        from buildlm.finetune.grpo_run import run_grpo as run
    run(model, data, train, task_config, lora, out=out, log=log, resume=_resume_target(rest))
