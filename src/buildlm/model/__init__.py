"""buildlm.model: the transformer, one block per file (stages 4-5 of the learning path).

``ModelConfig`` holds every architectural choice; ``GPT(config)`` builds the network.
"""

from buildlm.model.config import ModelConfig
from buildlm.model.gpt import GPT

__all__ = ["GPT", "ModelConfig"]
