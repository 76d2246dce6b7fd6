"""Checks for stage 11 (mixture of experts, sliding windows): your pieces against buildlm's.

Each check calls your code first (so an unfinished stub says ``NotImplementedError`` before
anything else), then compares it with buildlm's own: the router and experts of
``buildlm.model.moe``, the router losses it records, ``buildlm.model.sliding_window``'s mask and
``buildlm.infer.kvcache``'s ring buffer; and, where one exists, with ``transformers``: the
Qwen3-MoE sparse block and load-balancing loss, Switch Transformer's z-loss (imported only
when a check needs them). A failure raises ``AssertionError`` with what was expected, what
came out, and a hint.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from buildlm.infer.kvcache import StaticKVCache
from buildlm.model import GPT, ModelConfig
from buildlm.model.moe import MoE
from buildlm.model.sliding_window import sliding_causal_mask


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def meta_model(config: ModelConfig) -> GPT:
    """``GPT(config)`` on PyTorch's meta device: shapes without memory, for counting parameters.

    Initialisation is skipped (``normal_`` on a meta tensor computes nothing, but its first call
    imports PyTorch's compiler stack, seconds in a fresh process), as `buildlm.load` does.
    """
    names = ["normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_"]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    try:
        for name in names:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        with torch.device("meta"):
            return GPT(config)
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _best_time(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def moe_layer(seed: int = 0, d_model: int = 32, n_experts: int = 8, k: int = 2, d_ff: int = 24,
              **overrides) -> MoE:  # fmt: skip
    """A buildlm MoE layer (SwiGLU experts, no shared expert) with random weights of std 0.2."""
    cfg = ModelConfig(
        vocab_size=16, context_length=16, d_model=d_model, n_layers=1, n_heads=4, bias=False,
        norm="rmsnorm", position="rope", mlp="swiglu", n_experts=n_experts,
        n_active_experts=k, moe_d_ff=d_ff, **overrides,
    )  # fmt: skip
    torch.manual_seed(seed)
    layer = MoE(cfg)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return layer.eval()


ROUTERS = [
    dict(k=2, router_score="softmax", router_renormalize=True),  # Mixtral, Qwen3-MoE
    dict(k=1, router_score="softmax", router_renormalize=False),  # Switch Transformer
    dict(k=4, router_score="softmax", router_renormalize=False),  # Qwen2-MoE (norm_topk_prob off)
    dict(k=3, router_score="sigmoid", router_renormalize=True),  # DeepSeek-V3-style scores
]


def check_route(my_route) -> None:
    """Your router gives buildlm's MoE.route: the same experts, weights and logits."""
    x = torch.randn(50, 32, generator=torch.Generator().manual_seed(1))
    for setting in ROUTERS:
        layer = moe_layer(**setting)
        score, renorm = setting["router_score"], setting["router_renormalize"]
        got = my_route(x, layer.router.weight, setting["k"], score, renorm)
        want = layer.route(x)
        if not isinstance(got, tuple) or len(got) != 3:
            raise _fail(f"my_route(..., k={setting['k']}, {score!r}, {renorm})", "a tuple (top_w, top_ids, logits)",
                        type(got).__name__, "return all three")  # fmt: skip
        for name, mine, theirs in zip(("top_w", "top_ids", "logits"), got, want, strict=True):
            if _shape(mine) != _shape(theirs):
                raise _fail(f"shape of {name} with k={setting['k']}", _shape(theirs), _shape(mine),
                            "top_w and top_ids are (N, k), logits (N, n_experts)")  # fmt: skip
        if not torch.equal(got[1], want[1]):
            raise _fail(f"expert ids with k={setting['k']}, score={score!r}", want[1][:3].tolist(),
                        got[1][:3].tolist(), "scores.topk(k, dim=-1): best expert first; the "
                        "softmax (or sigmoid) of the logits x @ router_weight.T")  # fmt: skip
        for name, mine, theirs in (("logits", got[2], want[2]), ("top_w", got[0], want[0])):
            diff = float((mine - theirs).detach().abs().max())
            if diff > 1e-6:
                raise _fail(f"max |{name} difference| with k={setting['k']}, score={score!r}, "
                            f"renormalize={renorm}", "< 1e-6", f"{diff:.3g}",
                            "top_w: the chosen scores, divided by their sum when renormalize is "
                            "True (then each row sums to 1)")  # fmt: skip
    print(f"my_route: buildlm's experts and weights for {len(ROUTERS)} router settings. Correct!")


def check_dispatch(my_experts_forward) -> None:
    """Your dispatch equals buildlm's grouped Experts.forward and its reference loop."""
    layer = moe_layer(k=2)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 32, generator=gen)
    e = layer.experts
    cases = {"routed by the router": layer.route(x)[:2]}
    # Experts 5, 6, 7 get no token here; one token sends both slots to expert 0.
    ids = torch.randint(0, 5, (64, 2), generator=gen)
    ids[0] = 0
    cases["experts 5-7 without tokens"] = (torch.rand(64, 2, generator=gen), ids)
    for name, (w, ids) in cases.items():
        got = my_experts_forward(x, w, ids, e.w_gate, e.w_up, e.w_down)
        with torch.no_grad():
            want, ref = e(x, w, ids), e.forward_reference(x, w, ids)
        if _shape(got) != tuple(want.shape):
            raise _fail(f"shape of the output ({name})", tuple(want.shape), _shape(got),
                        "one d_model vector per token: (N, d_model)")  # fmt: skip
        diff = float((got - want).detach().abs().max())
        if diff > 1e-5:
            raise _fail(f"max |output difference| against buildlm's Experts ({name})", "< 1e-5",
                        f"{diff:.3g} (buildlm's grouped path and its loop differ by "
                        f"{float((want - ref).abs().max()):.1g})",
                        "expert e: silu(x @ w_gate[e].T) * (x @ w_up[e].T) @ w_down[e].T; scale "
                        "each (token, slot) by top_w[token, slot]; add the k results of a token "
                        "(index_add_); skip experts with no token")  # fmt: skip
    # Many tokens: a Python loop over them shows (about 100x slower than grouping by expert).
    x = torch.randn(20_000, 32, generator=gen)
    w, ids, _ = layer.route(x)
    with torch.no_grad():
        t_buildlm = _best_time(lambda: e(x, w, ids))
        t_mine = _best_time(lambda: my_experts_forward(x, w, ids, e.w_gate, e.w_up, e.w_down))
    if t_mine > max(0.5, 20 * t_buildlm):
        raise _fail("time for 20,000 tokens", f"about buildlm's {t_buildlm * 1e3:.0f} ms",
                    f"{t_mine * 1e3:.0f} ms", "no Python loop over tokens: sort the assignments "
                    "by expert, one matmul per expert, one index_add_")  # fmt: skip
    print(f"my_experts_forward: buildlm's Experts output in {len(cases)} routings; 20,000 tokens in "
          f"{t_mine * 1e3:.0f} ms (buildlm: {t_buildlm * 1e3:.0f} ms). Correct!")


def _qwen3_moe_block(layer: MoE, norm_topk_prob: bool):
    """transformers' Qwen3MoeSparseMoeBlock, from a config class, holding ``layer``'s weights."""
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    e = layer.experts
    cfg = Qwen3MoeConfig(
        hidden_size=layer.router.in_features, moe_intermediate_size=e.w_gate.shape[1],
        num_experts=e.n_experts, num_experts_per_tok=layer.k, norm_topk_prob=norm_topk_prob,
    )  # fmt: skip
    cfg._experts_implementation = "eager"  # the plain loop over experts, standalone
    block = Qwen3MoeSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        block.gate.weight.copy_(layer.router.weight)
        # Hugging Face keeps gate and up stacked in one (n_experts, 2 * d_ff, d_model) tensor.
        block.experts.gate_up_proj.copy_(torch.cat([e.w_gate, e.w_up], dim=1))
        block.experts.down_proj.copy_(e.w_down)
    return block


def check_moe_layer(my_route, my_experts_forward) -> None:
    """Your router + your dispatch = buildlm's MoE layer and transformers' Qwen3-MoE block."""
    x = torch.randn(3, 20, 32, generator=torch.Generator().manual_seed(3))  # (B, T, d)
    for renorm in (True, False):
        layer = moe_layer(k=2, router_renormalize=renorm)
        e = layer.experts
        flat = x.reshape(-1, 32)
        w, ids, _ = my_route(flat, layer.router.weight, 2, "softmax", renorm)
        got = my_experts_forward(flat, w, ids, e.w_gate, e.w_up, e.w_down).reshape(x.shape)
        block = _qwen3_moe_block(layer, renorm)
        with torch.no_grad():
            want, hf = layer(x), block(x)
        for who, ref in (("buildlm's MoE", want), ("transformers' Qwen3MoeSparseMoeBlock", hf)):
            diff = float((got - ref).detach().abs().max())
            if diff > 1e-5:
                raise _fail(f"max |output difference| against {who} (renormalize={renorm})",
                            "< 1e-5", f"{diff:.3g}", "route the (N, d) tokens, then dispatch; "
                            "both checks above should pass first")  # fmt: skip
    print("Your MoE layer: buildlm's output and transformers' Qwen3-MoE block's, with and "
          "without renormalised weights. Correct!")  # fmt: skip


def check_router_losses(my_router_losses) -> None:
    """Your balance loss, z-loss and shares equal buildlm's RouterStats (values and gradients),
    transformers' Qwen3-MoE load_balancing_loss_func (k times yours) and Switch's z-loss."""
    gen = torch.Generator().manual_seed(4)
    for k, scale in ((2, 1.0), (1, 3.0), (4, 0.3)):
        layer = moe_layer(k=k, router_renormalize=False)
        x = torch.randn(40, 32, generator=gen) * scale
        _, ids, logits = layer.route(x)  # records layer.last_stats
        want = layer.last_stats
        mine_logits = logits.detach().clone().requires_grad_(True)
        got = my_router_losses(mine_logits, ids)
        if not isinstance(got, tuple) or len(got) != 3:
            raise _fail("my_router_losses(logits, top_ids)", "a tuple (balance, z, share)",
                        type(got).__name__, "return all three")  # fmt: skip
        balance, z, share = got
        for name, mine, theirs in (("share", share, want.share), ("balance loss", balance, want.balance_loss),
                                   ("z-loss", z, want.z_loss)):  # fmt: skip
            if _shape(mine) != _shape(theirs) or not torch.allclose(mine.detach(), theirs.detach(), atol=1e-6):
                raise _fail(f"{name} with k={k}", theirs.detach().tolist() if name == "share" else
                            f"{float(theirs):.6f}", mine.tolist() if isinstance(mine, torch.Tensor) and
                            name == "share" else mine, "share_e = (assignments to e) / (N * k), sums to 1; "
                            "balance = n_experts * sum_e share_e * mean over tokens of softmax(logits)_e; "
                            "z = mean over tokens of logsumexp(logits)^2")  # fmt: skip
        if not balance.requires_grad:
            raise _fail("balance.requires_grad", True, False,
                        "the loss must flow into the router through the mean probabilities "
                        "(share comes from top-k: no gradient there, so compute it without grad)")  # fmt: skip
        # The gradient a trainer would send into the router's logits.
        (g_mine,) = torch.autograd.grad(balance + 0.1 * z, mine_logits)
        ref_logits = logits.detach().clone().requires_grad_(True)
        ref = layer._stats(ref_logits, ref_logits.float().softmax(-1), ids)
        (g_want,) = torch.autograd.grad(ref.balance_loss + 0.1 * ref.z_loss, ref_logits)
        if not torch.allclose(g_mine, g_want, atol=1e-7):
            raise _fail(f"gradient of balance + 0.1 z with respect to the logits (k={k})",
                        "buildlm's", f"max difference {float((g_mine - g_want).abs().max()):.3g}",
                        "share must not carry a gradient (.detach() or torch.no_grad)")  # fmt: skip
        from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func
        from transformers.models.switch_transformers.modeling_switch_transformers import (
            router_z_loss_func,
        )

        hf = load_balancing_loss_func((logits.detach(),), layer.experts.n_experts, top_k=k)
        if abs(float(hf) - k * float(balance)) > 1e-5:
            raise _fail(f"transformers' load_balancing_loss_func with top_k={k}", f"{float(hf):.6f}",
                        f"k * yours = {k * float(balance):.6f}", "transformers divides the counts by "
                        "the N tokens (shares summing to k), buildlm by the N * k assignments")  # fmt: skip
        hf_z = router_z_loss_func(logits.detach()[None])
        if abs(float(hf_z) - float(z)) > 1e-5 * max(1.0, float(hf_z)):
            raise _fail("Switch Transformer's router_z_loss_func", f"{float(hf_z):.6f}", f"{float(z):.6f}",
                        "torch.logsumexp(logits, dim=-1) ** 2, averaged over the tokens")  # fmt: skip
    print("my_router_losses: buildlm's shares, losses and gradients; transformers' balance loss "
          "(k x yours) and Switch's z-loss. Correct!")  # fmt: skip


MASK_CASES = [(12, 12, 4), (12, 12, 1), (8, 8, 8), (8, 8, 20), (3, 10, 4), (1, 10, 4), (5, 9, 2)]


def check_sliding_mask(my_mask) -> None:
    """Your mask is buildlm's sliding_causal_mask for square and cached (q_len < k_len) shapes."""
    for q_len, k_len, window in MASK_CASES:
        got = my_mask(q_len, k_len, window)
        want = sliding_causal_mask(q_len, k_len, window)
        if _shape(got) != tuple(want.shape) or got.dtype != torch.bool:
            raise _fail(f"my_mask({q_len}, {k_len}, {window})", f"bool {tuple(want.shape)}",
                        f"{getattr(got, 'dtype', '')} {_shape(got)}", "a boolean (q_len, k_len) tensor")  # fmt: skip
        if not torch.equal(got, want):
            raise _fail(f"keys seen per query, my_mask({q_len}, {k_len}, {window})", want.sum(-1).tolist(),
                        got.sum(-1).tolist(), "query i sits at position k_len - q_len + i and sees "
                        "key j when i_abs - window < j <= i_abs")  # fmt: skip
    print(f"my_mask: buildlm's sliding_causal_mask in {len(MASK_CASES)} shapes. Correct!")


def check_local_layer_forgets(my_mask, T: int = 24, window: int = 6) -> None:
    """With your mask, changing keys/values older than the window leaves the output unchanged."""
    mask = my_mask(T, T, window)  # called first: a stub stops here
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, T, 8, generator=gen) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for t in (window, T // 2, T - 1):
        old = t - window  # the newest position query t no longer sees
        k2, v2 = k.clone(), v.clone()
        k2[:, :, : old + 1] = torch.randn(1, 2, old + 1, 8, generator=gen) * 5
        v2[:, :, : old + 1] = torch.randn(1, 2, old + 1, 8, generator=gen) * 5
        out2 = F.scaled_dot_product_attention(q, k2, v2, attn_mask=mask)
        if not torch.equal(out[:, :, t], out2[:, :, t]):
            raise _fail(f"output at t={t} after changing positions 0..{old}", "unchanged",
                        "changed", f"a window of {window} sees t-{window - 1}..t only")  # fmt: skip
        k3 = k.clone()
        k3[:, :, old + 1] += 5
        out3 = F.scaled_dot_product_attention(q, k3, v, attn_mask=mask)
        if torch.equal(out[:, :, t], out3[:, :, t]):
            raise _fail(f"output at t={t} after changing position {old + 1}", "changed",
                        "unchanged", "the oldest key inside the window must still count")  # fmt: skip
    print(f"Local layer (window {window}): the output at t ignores every token older than "
          f"t - {window - 1}, and sees t - {window - 1}. Correct!")  # fmt: skip


def check_ring_cache(ring_cls, window: int = 4, steps: int = 11) -> None:
    """Your ring holds what buildlm's StaticKVCache holds for a local layer, slot for slot."""
    ring = ring_cls(2, 3, 5, window)  # called first: a stub stops here
    cache = StaticKVCache(1, 2, 3, 5, max_len=64, windows=[window])
    gen = torch.Generator().manual_seed(6)
    for p in range(steps):
        k, v = torch.randn(2, 3, 1, 5, generator=gen), torch.randn(2, 3, 1, 5, generator=gen)
        slots = cache.key_slots(window, 1)  # positions after this write, read before it
        want_k, want_v = cache.update(0, k, v)
        got = ring.update(k, v)
        if not isinstance(got, tuple) or len(got) != 3:
            raise _fail("ring.update(k, v)", "a tuple (keys, values, positions)", type(got).__name__,
                        "return the storage and the position of each slot")  # fmt: skip
        keys, values, positions = got
        if _shape(keys) != (2, 3, window, 5):
            raise _fail(f"keys' shape after writing position {p}", (2, 3, window, 5), _shape(keys),
                        "the whole ring, always `window` slots: (B, heads, window, head_dim)")  # fmt: skip
        same = isinstance(positions, torch.Tensor) and positions.shape == slots.shape and bool(
            ((positions == slots) | ((positions < 0) & (slots < 0))).all()
        )  # buildlm marks an unwritten slot by a negative position, not always -1
        if not same:
            raise _fail(f"positions after writing position {p}", slots.clamp(min=-1).tolist(),
                        positions.tolist() if isinstance(positions, torch.Tensor) else positions,
                        "slot s holds the newest position a <= p with a % window == s; -1 if none yet")  # fmt: skip
        written = positions >= 0  # unwritten slots may hold anything
        if not (torch.equal(keys[:, :, written], want_k[:, :, written])
                and torch.equal(values[:, :, written], want_v[:, :, written])):  # fmt: skip
            raise _fail(f"the ring's contents after writing position {p}", "buildlm's, slot for slot",
                        "something else", f"position p goes to slot p % {window}, overwriting "
                        "the oldest; keep keys and values apart")  # fmt: skip
    print(f"RingKVCache: buildlm's ring, slot for slot, over {steps} positions with a window of "
          f"{window}. Correct!")  # fmt: skip


def check_ring_decoding(steps: torch.Tensor, full: torch.Tensor, ring, window: int) -> None:
    """Decoding one position at a time through the ring = the whole sequence at once."""
    diff = float((steps - full).abs().max())
    if diff > 1e-5:
        raise _fail("max |difference| between ring decoding and the full masked pass", "< 1e-5",
                    f"{diff:.3g}", "each step attends to the ring's written slots (positions >= 0)")  # fmt: skip
    size = ring.k.shape[2]
    if size != window:
        raise _fail(f"slots held after {full.shape[2]} positions", window, size,
                    "a local layer's cache never grows past its window")  # fmt: skip
    print(f"{full.shape[2]} positions decoded through a ring of {window} slots: the full pass's "
          "outputs. Correct!")  # fmt: skip
