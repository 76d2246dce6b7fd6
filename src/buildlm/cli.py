"""The ``buildlm`` command.

Each subcommand lives beside the code it drives (``buildlm.tokenizer.cli`` for
``buildlm tokenizer ...``, ``buildlm.train.cli`` for ``buildlm train`` ...) and exposes
``main(argv: list[str]) -> None``. This file only dispatches, imports the subcommand lazily (so
``buildlm --help`` is instant and a tokenizer command never imports torch), and turns the errors
a user can cause into one line and a non-zero exit.
"""

from __future__ import annotations

import importlib
import sys

from buildlm.errors import USER_ERRORS, storage_error_message

# name -> (module that holds ``main``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "tokenizer": ("buildlm.tokenizer.cli", "train a BPE tokenizer, encode and decode text"),
    "prepare": ("buildlm.data.cli", "tokenize text files or bundled corpora into memmap shards"),
    "train": ("buildlm.train.cli", "pretrain a GPT (no arguments: a small model on Shakespeare)"),
    "finetune": ("buildlm.finetune.cli", "fine-tune: classify, instruct (SFT) or dpo; LoRA or full"),
    "classify": ("buildlm.finetune.classify_cli", "label texts with a classifier from `finetune classify`"),
    "generate": ("buildlm.infer.cli", "generate text from a checkpoint or Hugging Face folder"),
    "chat": ("buildlm.infer.chat", "chat with a model in the terminal, replies streamed"),
    "serve": ("buildlm.serve.cli", "serve a model: OpenAI-compatible HTTP API and a chat page"),
    "download": ("buildlm.hub.download", "download a model folder from the Hugging Face Hub"),
    "convert": ("buildlm.hub.convert", "convert Hugging Face folders <-> buildlm checkpoints"),
    "eval": ("buildlm.eval.cli", "perplexity, bits per byte, multiple choice, lm-eval tasks"),
    "explain": ("buildlm.viz.explain_cli", "print a model stage by stage: shapes, params, FLOPs"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: buildlm <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`buildlm <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    if argv[0] == "--version":
        from buildlm import __version__

        print(f"buildlm {__version__}")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"buildlm: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(COMMANDS[name][0])
    try:
        module.main(rest)
    except (OSError, *USER_ERRORS) as err:
        message = storage_error_message(err)  # disk full, read-only, ...: one line, not a bug
        if message is None and not isinstance(err, USER_ERRORS):
            raise
        if message is None:
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"buildlm {name}: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"buildlm {name}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
