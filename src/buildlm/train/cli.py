"""``buildlm train``: pretrain a GPT. With no arguments, a small model on the bundled Shakespeare.

Settings come from four dataclasses (``--model.*``, ``--train.*``, ``--data.*``,
``--tokenizer.*``), set from a YAML file (``--config my.yaml``, or a bundled one by name:
``--config verdict-tiny``, see ``buildlm.train.bundled_configs``) and/or the command line; later flags override earlier ones. ``--print_config`` shows the result as YAML.
The no-argument run is a bundled config too (``NO_ARGUMENT_CONFIG``, ``shakespeare-small``):
its settings are the parser's starting values, so ``buildlm train`` and ``buildlm train
--config shakespeare-small`` are the same run, and every other ``--config`` or flag overrides it.
``--resume RUN_OR_CHECKPOINT`` continues a run with its saved settings.

Data-parallel training: ``torchrun --nproc-per-node N -m buildlm train ...`` (any torchrun
options, several machines included), or ``buildlm train --nproc N ...`` which starts that
torchrun on this machine. ``--train.distributed fsdp`` shards the model instead of copying it.
"""

from __future__ import annotations

import sys


def _flatten(prefix: str, d: dict, out: dict) -> dict:
    for key, value in d.items():
        out[f"{prefix}.{key}"] = value
    return out


def _resume_target(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--resume" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--resume="):
            return arg.split("=", 1)[1]
    return None


def _take_nproc(argv: list[str]) -> tuple[int | None, list[str]]:
    """``--nproc N`` (or ``--nproc=N``) out of ``argv``; the rest goes to the ranks."""
    rest, nproc, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg == "--nproc":
            if i + 1 >= len(argv):
                raise ValueError("--nproc needs a number of processes, e.g. --nproc 2")
            value, i = argv[i + 1], i + 2
        elif arg.startswith("--nproc="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            rest.append(arg)
            i += 1
            continue
        try:
            nproc = int(value)
        except ValueError:
            nproc = 0
        if nproc < 1:
            raise ValueError(f"--nproc must be a positive number of processes, got {value!r}")
    return nproc, rest


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run ``buildlm train argv`` as ``nproc`` processes on this machine; their exit code.

    ``--standalone`` makes torchrun pick a free port for rank 0 on localhost.
    """
    import subprocess

    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "buildlm", "train", *argv,
    ]  # fmt: skip
    print("launching: " + " ".join(command[1:]), flush=True)
    return subprocess.call(command)


def parse_in_one_line(parser, argv: list[str]):
    """``parser.parse_args(argv)``, with a bad flag or value as one ``ValueError`` line.

    jsonargparse's own report prints the whole usage (some sixty lines) before the one line
    that says what is wrong; the CLI prints that line alone, and ``--help`` shows the rest.
    """
    import argparse

    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as err:
        lines = [line.strip(" -") for line in str(err).splitlines() if line.strip(" -")]
        what = " ".join(dict.fromkeys(lines))  # jsonargparse sometimes says a thing twice
        raise ValueError(f"{what} (see {parser.prog} --help)") from None


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from buildlm.train.bundled_configs import NO_ARGUMENT_CONFIG, bundled_names, resolve_config
    from buildlm.train.config import DataConfig, TokenizerConfig, TrainConfig
    from buildlm.train.run import model_args_class

    parser = ArgumentParser(
        prog="buildlm train",
        description=(
            "Pretrain a GPT. With no arguments: train a BPE tokenizer on the bundled Shakespeare, "
            "tokenize it, train a small model on CPU for about five minutes, save it under "
            "runs/<date-time>/ and print a sample."
        ),
        exit_on_error=False,  # a bad value is one line (parse_in_one_line), not the usage
    )
    parser.add_argument(
        "--config", action=ActionConfigFile,
        help="a YAML file of settings, or a bundled one by name: " + ", ".join(bundled_names()),
    )  # fmt: skip
    parser.add_class_arguments(model_args_class(), "model", instantiate=False)
    parser.add_class_arguments(TrainConfig, "train", instantiate=False)
    parser.add_class_arguments(DataConfig, "data", instantiate=False)
    parser.add_class_arguments(TokenizerConfig, "tokenizer", instantiate=False)
    no_argument_run = parser.parse_path(resolve_config(NO_ARGUMENT_CONFIG), defaults=False)
    parser.set_defaults(dict(no_argument_run.items()))
    parser.add_argument(
        "--resume", type=str | None, default=None,
        help="continue a run: its folder (newest checkpoint) or one checkpoint folder",
    )
    parser.add_argument(
        "--nproc", type=int | None, default=None,
        help="train data-parallel with N processes on this machine (starts torchrun; see --train.distributed)",
    )
    return parser


def main(argv: list[str]) -> None:
    from buildlm import checkpoint_format
    from buildlm.cli_parser import underscore_flags
    from buildlm.train.budget import process_started
    from buildlm.train.bundled_configs import resolve_config_args
    from buildlm.train.config import DataConfig, TokenizerConfig, TrainConfig
    from buildlm.train.distributed import launched_by_torchrun
    from buildlm.train.run import model_args_class, run_training

    nproc, argv = _take_nproc(resolve_config_args(underscore_flags(argv)))
    if nproc is not None and nproc > 1 and not launched_by_torchrun():
        code = launch_torchrun(nproc, argv)
        if code:
            raise SystemExit(code)
        return
    parser = build_parser()
    target = _resume_target(argv)
    if target is not None:
        # The saved settings become the defaults; flags given now still override them.
        from buildlm.model import ModelConfig
        from buildlm.train.checkpoint_health import resolve_resumable

        saved = checkpoint_format.read_config(resolve_resumable(target, set_aside_damaged=False))
        # as this version names the fields (an older run may say d_head, or null for automatic)
        saved["model"] = ModelConfig.from_dict(saved["model"]).to_dict()
        flat: dict = {}
        for group in ("train", "data", "tokenizer", "model"):
            _flatten(group, saved.get(group, {}), flat)
        defaults = {}
        for key, value in flat.items():
            try:
                parser.get_default(key)
            except KeyError:  # a field this version no longer has
                continue
            defaults[key] = value
        parser.set_defaults(defaults)
    cfg = parse_in_one_line(parser, argv)
    model_args = model_args_class()(**vars(cfg.model))
    train = TrainConfig(**vars(cfg.train))
    data = DataConfig(**vars(cfg.data))
    tok = TokenizerConfig(**vars(cfg.tokenizer))
    run_training(
        model_args, train, data, tok, resume=cfg.resume, log=lambda msg: print(msg, file=sys.stdout, flush=True),
        started=process_started(),  # a time budget counts from the command's start
    )  # fmt: skip
