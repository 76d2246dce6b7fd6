"""The GPT model: token ids in, next-token logits out.

    ids (B, T) -> token embedding (+ position embedding) -> dropout
               -> n_layers x Block (attention + MLP, residual)
               -> final norm -> LM head -> logits (B, T, vocab_size)

Logit t is the model's prediction for token t+1; the trainer turns logits into a loss with
cross-entropy (the model itself knows nothing about losses or optimisers).

One class covers GPT-2 and Llama/Qwen-style networks through `ModelConfig` switches. With
``tie_embeddings`` the LM head reuses the token-embedding matrix (GPT-2 does this: it saves
V x d parameters, 38.6M at GPT-2 small, and reading and writing tokens share one vocabulary of
vectors). A tied model has no separate ``lm_head`` parameter at all, so the state dict holds the
matrix once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.model.attention import KVCache
from buildlm.model.block import Block
from buildlm.model.config import ModelConfig
from buildlm.model.moe import Experts, inactive_expert_params
from buildlm.model.norm import make_norm
from buildlm.model.position import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
    rope_frequency_scaling,
)
from buildlm.model.sliding_window import layer_masks


class GPT(nn.Module):
    """A decoder-only transformer language model built from a `ModelConfig`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb: nn.Module | None = None
        self.rope: RotaryEmbedding | None = None
        if config.position == "learned":
            self.pos_emb = LearnedPositionalEmbedding(config.context_length, config.d_model)
        elif config.position == "sinusoidal":
            self.pos_emb = SinusoidalPositionalEmbedding(config.context_length, config.d_model)
        else:
            self.rope = RotaryEmbedding(
                config.head_dim,
                config.context_length,
                config.rope_theta,
                scaling=rope_frequency_scaling(config.rope_scaling),
            )
        # Local layers may rotate with their own base (Gemma 3: 10k local, 1M global).
        self.rope_local: RotaryEmbedding | None = None
        if config.rope_local_theta is not None:
            self.rope_local = RotaryEmbedding(
                config.head_dim, config.context_length, config.rope_local_theta
            )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        # Post-LN blocks already end with a norm; every other placement needs a final one.
        self.norm = (
            make_norm(config.norm, config.d_model, config.norm_eps, config.bias, config.norm_offset)
            if config.norm_placement != "post"
            else nn.Identity()
        )
        self.lm_head = (
            None
            if config.tie_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        self.reset_parameters()

    # ---- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation.

        Every weight matrix and embedding is drawn from N(0, init_std^2) with init_std=0.02, and
        biases start at zero. The output projections that write into the residual stream (the
        attention ``proj`` and the MLP's last layer) are scaled down by 1/sqrt(2 * n_layers):
        each block adds two such contributions to the stream, and without the scaling the
        stream's variance would grow with depth.
        """
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                s = residual_std if getattr(module, "residual_projection", False) else std
                nn.init.normal_(module.weight, mean=0.0, std=s)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.Embedding, LearnedPositionalEmbedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, Experts):  # stacked expert matrices, initialised alike
                module.reset_parameters(std, residual_std)

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute the non-persistent buffers (RoPE cos/sin, the sinusoidal table) on ``device``.

        These tables are functions of the config, never saved in a checkpoint. A model built on
        the meta device (shapes only, no memory: how `buildlm.hub.load_hf` avoids allocating the
        weights twice) has meta buffers; loading weights does not fill them, this does.
        """
        for module in self.modules():
            if module is not self and hasattr(module, "reset_buffers"):
                module.reset_buffers(device)

    def cover_positions(self, length: int) -> None:
        """Make the RoPE tables reach position ``length - 1`` (they start short and grow; see
        `buildlm.model.position.RotaryEmbedding.cover`). A forward pass does it by itself; a
        recorded CUDA graph, which must not see its buffers move, calls it before recording."""
        for rope in (self.rope, self.rope_local):
            if rope is not None:
                rope.cover(length)

    # ---- forward --------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, vocab_size).

        With a ``cache`` (see `buildlm.model.attention.KVCache`), ``idx`` holds only the new
        tokens and positions continue from ``cache.offset``.

        Batches of prompts of different lengths are left-padded to one length (that is how
        `buildlm.infer.Engine` batches them). ``key_mask`` (B, offset + T), True for real
        tokens, hides the pad slots from attention, and ``positions`` (B, T) numbers each row's
        tokens from its first real one, so a padded row computes what it would alone.
        """
        return self.head(self.hidden_states(idx, cache, positions, key_mask))

    def hidden_states(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last block's output after the final norm, (B, T, d_model): the LM head's input.

        Same arguments as `forward`. Generation needs logits for the last position only; taking
        the hidden states and applying `head` to that one position skips (T - 1) x vocab_size
        dot products per prompt.
        """
        hidden, _ = self._run(idx, cache, False, positions, key_mask)
        return hidden

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., d_model) -> logits (..., vocab_size).

        With ``final_logit_softcap`` (Gemma 2) the logits become cap * tanh(logits / cap):
        bounded to (-cap, cap), nearly unchanged where they are small.
        """
        # Tied: score each token vector against every embedding.
        tied = self.lm_head is None
        logits = F.linear(x, self.tok_emb.weight) if tied else self.lm_head(x)
        cap = self.config.final_logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def plain_head_weight(self) -> torch.Tensor | None:
        """The (vocab_size, d_model) matrix the head multiplies by, if the head is just that.

        ``head(x) == F.linear(x, plain_head_weight())`` then holds, so a loss may fuse the head
        with the cross-entropy (`buildlm.train.linear_cross_entropy`). None where the head does
        more: a logit soft cap, a bias, an adapter or a quantized layer in its place.
        """
        if self.config.final_logit_softcap is not None:
            return None
        if self.lm_head is None:
            return self.tok_emb.weight if type(self.tok_emb) is nn.Embedding else None
        plain = type(self.lm_head) is nn.Linear and self.lm_head.bias is None
        return self.lm_head.weight if plain else None

    def get_attention_weights(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The attention weights of every layer for ``idx``: a list of (B, n_heads, T, T).

        Runs the explicit attention formula (whatever ``config.attention`` says) so the weights
        exist; for visualising what each head attends to.
        """
        _, weights = self._run(idx, None, need_weights=True)
        return weights

    def _run(
        self,
        idx: torch.Tensor,
        cache: KVCache | None,
        need_weights: bool,
        positions: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if idx.dim() != 2:
            raise ValueError(f"expected token ids of shape (batch, time), got {tuple(idx.shape)}")
        b, t = idx.shape
        offset = 0 if cache is None else cache.offset
        if offset + t > self.config.context_length:
            raise ValueError(
                f"sequence of {offset + t} tokens exceeds context_length="
                f"{self.config.context_length}; crop the input to the last "
                f"{self.config.context_length} tokens"
            )
        if positions is not None and positions.shape != (b, t):
            raise ValueError(f"positions must have shape {(b, t)}, got {tuple(positions.shape)}")
        self.cover_positions(offset + t)
        windows = {block.attn.sliding_window for block in self.blocks}
        slots = getattr(cache, "key_slots", None)  # caches that keep only a local layer's window
        masks = layer_masks(windows, t, offset, key_mask, idx.device, slots)  # window -> mask
        x = self.tok_emb(idx)  # (B, T, d_model)
        if self.config.embed_scale:  # Gemma: sqrt(d_model), rounded to the weights' dtype
            x = x * torch.tensor(self.config.d_model**0.5, dtype=x.dtype)
        if self.pos_emb is not None:
            x = x + self.pos_emb(t, offset, positions)  # (T or B x T, d_model), broadcast
        x = self.drop(x)
        weights: list[torch.Tensor] = []
        for block in self.blocks:
            window = block.attn.sliding_window
            rope = self.rope_local if window is not None and self.rope_local else self.rope
            x, w = block(x, rope, cache, offset, need_weights, positions, masks[window])
            if w is not None:
                weights.append(w)
        return self.norm(x), weights  # (B, T, d_model)

    # ---- accounting -----------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False, active: bool = False) -> int:
        """Number of parameters (a tied matrix counts once).

        ``non_embedding=True`` leaves out the token-embedding table and learned position
        embeddings, the convention of the scaling-law papers (an untied LM head is kept: it is a
        real matmul). ``active=True`` counts, in mixture-of-experts layers, only the
        ``n_active_experts`` experts one token uses (the "A3B" of Qwen3-30B-A3B); a dense model
        has active == total.
        """
        n = sum(p.numel() for p in self.parameters())
        if active:
            n -= inactive_expert_params(self)
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if isinstance(self.pos_emb, LearnedPositionalEmbedding):
                n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward) at ``seq_len`` (default context_length).

        The PaLM / nanoGPT MFU estimate: 6N + 12 * n_layers * d_attn * T, where
        - N counts the weights that take part in a matmul (every Linear weight plus the LM
          head, counted even when it is tied; embedding look-ups, norms and biases are not
          matmuls). A matmul with N weights costs 2N FLOPs per token forward (multiply + add)
          and 4N backward (gradients for the inputs and for the weights): 6N in all.
        - the attention term: per layer and token, Q K^T and (weights x V) each cost
          2 * T * d_attn forward, so 4 * T * d_attn, times 3 for forward + backward.
          d_attn = n_heads * head_dim. The causal mask halves the useful work, but the
          convention counts the full T x T product.
        In a mixture-of-experts layer a token runs through its k active experts only, so N
        counts those (and the router), not all n_experts. A local (sliding-window) layer's
        queries see at most ``window`` keys, so its attention term uses min(T, window).
        """
        t = self.config.context_length if seq_len is None else seq_len
        n = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        n += sum(p.numel() for m in self.modules() if isinstance(m, Experts) for p in m.parameters())
        n -= inactive_expert_params(self)
        if self.lm_head is None:
            n += self.tok_emb.weight.numel()
        d_attn = self.config.n_heads * self.config.head_dim
        spans = (min(t, block.attn.sliding_window or t) for block in self.blocks)
        return 6 * n + 12 * d_attn * sum(spans)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device
