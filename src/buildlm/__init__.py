"""buildlm: build a large language model from scratch, block by block, then really use it.

The package mirrors the learning path: ``tokenizer`` (stage 2), ``data`` (stage 3),
``model`` (stages 4-5), ``train`` (stages 6 and 8), ``hub`` (stage 7), ``infer`` (stage 9).

``buildlm.load(name_or_folder)`` (`buildlm/loader.py`) opens a model to write with: the shipped
``"shakespeare-small"`` (`buildlm/pretrained/`) or any checkpoint, run or Hugging Face folder.
It is imported on first use, so ``import buildlm`` stays light (no torch until it is needed).
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load":
        from buildlm.loader import load

        return load
    raise AttributeError(f"module 'buildlm' has no attribute {name!r}")
