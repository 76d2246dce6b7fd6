"""A real GPT whose output is written in advance: the token it emits depends on its position only.

Used by the tool-use tests (`buildlm.infer.tool_use`), which need a model that *writes a tool
call* on cue, through the real `Engine`, `buildlm chat` and `buildlm serve`, without training
one. Shared by several test folders (``sys.path`` gets this folder, as for ``cli_run``).

How the weights make it: the token embeddings are zero and the learned position embeddings
are the identity, so the residual stream at position ``p`` is the one-hot vector ``e_p``;
every block's output projections are zero, so the blocks add nothing; the final LayerNorm keeps
the hot coordinate the largest; and the LM head maps coordinate ``p`` to the token ``script[p]``
with a large weight. So after reading position ``p`` (whatever token sits there) the model's
next token is ``script[p]``, by a margin of dozens of logits: greedy or sampled, the same.
The tokenizer is byte-level BPE with no merges (one token per byte) plus ``<|endoftext|>``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer


def byte_tokenizer() -> Tokenizer:
    """One token per byte (ids 0..255) and ``<|endoftext|>`` (256)."""
    return Tokenizer.from_merges([])


def scripted_model(script: list[int], context_length: int = 128, filler: int = ord(".")) -> GPT:
    """A GPT that emits ``script[p]`` after position ``p`` (``filler`` past the script's end)."""
    tok_vocab = 257
    config = ModelConfig.preset(
        "tiny", vocab_size=tok_vocab, context_length=context_length, d_model=context_length,
        n_layers=1, n_heads=1, tie_embeddings=False,
    )  # fmt: skip
    model = GPT(config).eval()
    targets = (list(script) + [filler] * context_length)[:context_length]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.pos_emb.weight.copy_(torch.eye(context_length))
        model.norm.weight.fill_(1.0)
        for block in model.blocks:
            block.norm1.weight.fill_(1.0)
            block.norm2.weight.fill_(1.0)
        for position, token in enumerate(targets):
            model.lm_head.weight[token, position] = 10.0
    return model


def script_after(prompt: str, continuation: list[int]) -> list[int]:
    """A script whose model continues ``prompt`` (bytes) with ``continuation``: the positions
    of the prompt but its last one hold filler, the continuation starts after the prompt."""
    return [ord(".")] * (len(prompt.encode()) - 1) + list(continuation)


def text_ids(text: str) -> list[int]:
    return list(text.encode())


def save_scripted(run: Path, script: list[int], context_length: int = 128) -> Path:
    """A checkpoint folder of `scripted_model` with the byte tokenizer (for chat and serve)."""
    from buildlm.train.checkpoint import save_checkpoint

    model = scripted_model(script, context_length)
    return save_checkpoint(
        run, 1, model, {"model": model.config.to_dict()}, tokenizer=byte_tokenizer()
    )
