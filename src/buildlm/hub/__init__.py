"""buildlm.hub: real pretrained weights from the Hugging Face Hub, in and out (stage 7).

``load_hf(folder)`` turns a Hugging Face model folder (GPT-2, Llama, Qwen2, Qwen3) into a buildlm
``GPT`` and ``Tokenizer``; ``save_hf(model, tokenizer, folder)`` writes one that
``transformers`` loads with the same logits. One concept per file:

- ``hf_config.py``: config.json <-> ModelConfig
- ``hf_weights.py``: tensor names and layouts, both ways
- ``safetensors_io.py``: the safetensors format, read straight into the final tensors
- ``weight_files.py``: single, sharded and ``pytorch_model.bin`` checkpoints
- ``load.py`` / ``save.py``: the two directions
- ``chat_templates.py``: conversation -> prompt text (Llama 3, ChatML)
- ``download.py`` / ``convert.py``: the ``buildlm download`` and ``buildlm convert`` commands
"""

from buildlm.hub.chat_templates import chatml_prompt, llama3_prompt, qwen2_prompt
from buildlm.hub.load import load_hf, load_hf_tokenizer
from buildlm.hub.save import save_hf

__all__ = [
    "chatml_prompt",
    "llama3_prompt",
    "load_hf",
    "load_hf_tokenizer",
    "qwen2_prompt",
    "save_hf",
]
