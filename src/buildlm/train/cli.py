"""``buildlm train``: pretrain a GPT. With no arguments, a small model on the bundled Shakespeare.

Settings come from four dataclasses (``--model.*``, ``--train.*``, ``--data.*``,
``--tokenizer.*``), set from a YAML file (``--config configs/shakespeare-small.yaml``) and/or
the command line; later flags override earlier ones. ``--print_config`` shows the result as YAML.
``--resume RUN_OR_CHECKPOINT`` continues a run with its saved settings.
"""

from __future__ import annotations

import sys

# The zero-argument run differs from the library defaults in two places: 128-token windows in
# batches of 32 (the "tiny" preset's 256 tokens cost more attention per token and, in a five-minute
# run, learn less than twice the windows of half the length). The model is built with the
# training context_length unless --model.context_length is given.
CLI_DEFAULTS = {"train.context_length": 128, "train.batch_size": 32}


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


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from buildlm.train.config import DataConfig, TokenizerConfig, TrainConfig
    from buildlm.train.run import model_args_class

    parser = ArgumentParser(
        prog="buildlm train",
        description=(
            "Pretrain a GPT. With no arguments: train a BPE tokenizer on the bundled Shakespeare, "
            "tokenize it, train a small model on CPU for about five minutes, save it under "
            "runs/<date-time>/ and print a sample."
        ),
        exit_on_error=True,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of settings (see configs/)")
    parser.add_class_arguments(model_args_class(), "model", instantiate=False)
    parser.add_class_arguments(TrainConfig, "train", instantiate=False)
    parser.add_class_arguments(DataConfig, "data", instantiate=False)
    parser.add_class_arguments(TokenizerConfig, "tokenizer", instantiate=False)
    parser.set_defaults(CLI_DEFAULTS)
    parser.add_argument(
        "--resume", type=str | None, default=None,
        help="continue a run: its folder (newest checkpoint) or one checkpoint folder",
    )
    return parser


def main(argv: list[str]) -> None:
    from buildlm.train import checkpoint as ckpt
    from buildlm.train.config import DataConfig, TokenizerConfig, TrainConfig
    from buildlm.train.run import model_args_class, run_training

    parser = build_parser()
    target = _resume_target(argv)
    if target is not None:
        # The saved settings become the defaults; flags given now still override them.
        saved = ckpt.read_config(ckpt.resolve_checkpoint(target))
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
    cfg = parser.parse_args(argv)
    model_args = model_args_class()(**vars(cfg.model))
    train = TrainConfig(**vars(cfg.train))
    data = DataConfig(**vars(cfg.data))
    tok = TokenizerConfig(**vars(cfg.tokenizer))
    run_training(model_args, train, data, tok, resume=cfg.resume, log=lambda msg: print(msg, file=sys.stdout, flush=True))
