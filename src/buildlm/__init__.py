"""buildlm: build a large language model from scratch, block by block, then really use it.

The packages follow the learning path, each importing only the ones listed before it
(docs/architecture.md, "Rules of the house"; ``tests/test_layers.py`` checks it):

- ``tokenizer/`` (stage 2), ``data/`` (stage 3), ``model/`` (stages 4-5): the pieces;
- ``hub/`` (stage 7): Hugging Face folders in and out; ``infer/`` (stage 9): generating text;
- ``viz/``: pictures and printouts of a model; ``eval/``: measuring one;
- ``train/`` (stage 6): pretraining; ``finetune/`` (stage 8); ``serve/``: the HTTP server.

Shared helpers at the bottom, one job each:

- ``errors.py``: one-line messages for user errors; ``atomic.py``: atomic writes, and which files
  buildlm wrote; ``lock.py``: one writer per folder; ``device.py``: devices, dtypes, autocast,
  seeds; ``precision.py``: what ``--train.precision auto`` picks on this machine, measured;
  ``cli_parser.py``: the argument parser every command uses;
- ``checkpoint_format.py``: the checkpoint folder (config, weights, tokenizer) and loading it
  for inference;
- ``loader.py``: ``buildlm.load(name_or_folder)``, the one-line way in: the shipped
  ``"shakespeare-small"`` (``pretrained/``), any checkpoint, run or Hugging Face folder, with
  ``.generate``, ``.stream`` and ``.chat``. Imported on first use, so ``import buildlm`` stays
  light (no torch until it is needed);
- ``cli.py`` / ``__main__.py``: the ``buildlm`` command.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load":
        from buildlm.loader import load

        return load
    raise AttributeError(f"module 'buildlm' has no attribute {name!r}")
