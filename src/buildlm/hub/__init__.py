"""buildlm.hub: real pretrained weights from the Hugging Face Hub and GGUF files, in and out (stage 7).

``load_hf(folder)`` turns a Hugging Face model folder (GPT-2, Llama, Qwen2, Qwen3, Mistral, Gemma
1/2/3, OLMo 2, and the mixtures of experts Mixtral, Qwen2-MoE, Qwen3-MoE) into a buildlm ``GPT``
and ``Tokenizer``; ``save_hf(model, tokenizer, folder)`` writes one that ``transformers`` loads
with the same logits. ``save_gguf`` / ``load_gguf`` do the same for one GGUF file, the format
llama.cpp and Ollama run (gpt2, llama with or without Llama 3 RoPE scaling, qwen2, qwen3,
gemma 1/2/3, olmo2, mixtral, qwen2-moe and qwen3-moe networks; f32, f16, bf16 or q8_0). The chat templates that come with a model's tokenizer live with the
tokenizer (`buildlm.tokenizer.chat_templates`). One concept per file:

- ``hf_config.py``: config.json <-> ModelConfig
- ``hf_windows.py``: sliding-window settings in config.json (Mistral, Mixtral, windowed Qwen2/Qwen3)
- ``hf_weights.py``: tensor names and layouts, both ways
- ``hf_moe.py``: the mixture-of-experts families' config keys and expert tensor names
- ``hf_gemma_olmo.py``: Gemma's and OLMo 2's block details (norm placement, scales, caps)
- ``safetensors_io.py``: the safetensors format, read straight into the final tensors
- ``weight_files.py``: single, sharded and ``pytorch_model.bin`` checkpoints
- ``load.py`` / ``save.py``: the two directions
- ``gguf_config.py``: Hugging Face config <-> GGUF architecture metadata
- ``gguf_families.py``: the GGUF metadata of Gemma, OLMo 2, Qwen2-MoE, windowed Mistral and
  Llama 3 RoPE scaling, and what llama.cpp fixes that they must match
- ``gguf_tensors.py``: GGUF tensor names, layouts (llama's RoPE row order) and f16/bf16/q8_0
- ``gguf_tokenizer.py``: Tokenizer <-> GGUF ``tokenizer.ggml.*`` fields
- ``gguf_spm.py``: SentencePiece-style tokenizers (Llama 2, Mistral, Gemma) <-> GGUF's ``"llama"``
  tokenizer (scores in place of merges)
- ``gguf_save.py`` / ``gguf_load.py``: the two GGUF directions
- ``download.py`` / ``convert.py``: the ``buildlm download`` and ``buildlm convert`` commands
"""

from buildlm.hub.gguf_load import load_gguf
from buildlm.hub.gguf_save import save_gguf
from buildlm.hub.load import load_hf, load_hf_tokenizer
from buildlm.hub.save import save_hf

__all__ = [
    "load_gguf",
    "save_gguf",
    "load_hf",
    "load_hf_tokenizer",
    "save_hf",
]
