"""buildlm.model: the transformer, one block per file (stages 4-5 of the learning path).

``ModelConfig`` holds every architectural choice; ``GPT(config)`` builds the network. This package
is the network only: loading, generating, explaining and training a model live above it.

- ``config.py``: `ModelConfig`, every architectural choice in one dataclass;
- ``norm.py``: LayerNorm (GPT-2) and RMSNorm (Llama, Qwen);
- ``position.py``: learned, sinusoidal and rotary (RoPE) positions;
- ``attention.py``: causal self-attention (multi-head, grouped-query), and the cache it reads;
- ``sliding_window.py``: the masks of local (sliding-window) attention layers;
- ``mlp.py``: the feed-forward sub-layer (GELU, SwiGLU);
- ``block.py``: one transformer block: attention then MLP, residuals and norms;
- ``gpt.py``: `GPT`: token ids in, next-token logits out;
- ``lora.py``: LoRA adapters beside frozen weights;
- ``quantize.py``: weight-only int8 quantization.
"""

from buildlm.model.config import ModelConfig
from buildlm.model.gpt import GPT

__all__ = ["GPT", "ModelConfig"]
