"""Checks for stage 9 (decoding): your filters, sampling loop and KV cache against buildlm's.

Each check calls your code first (so an unfinished stub says ``NotImplementedError`` before
anything else), then compares it with buildlm's own: ``buildlm.infer.sampling``'s filters,
``buildlm.infer.generate`` (the readable loop) and ``buildlm.infer.Engine`` (the cached one).
A failure raises ``AssertionError`` with what was expected, what came out, and a hint.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from buildlm.infer import generate
from buildlm.infer.engine import Engine
from buildlm.infer.sampling import top_k_filter, top_p_filter

NEG_INF = float("-inf")


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def _kept(t: torch.Tensor) -> list[int]:
    return (t > NEG_INF).sum(dim=-1).tolist()


def check_top_k(my_top_k) -> None:
    """Your top-k filter keeps exactly buildlm's tokens, with their logits unchanged."""
    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    for k in (1, 5, 50, 100):
        mine = my_top_k(logits.clone(), k)
        want = top_k_filter(logits, k)
        if not isinstance(mine, torch.Tensor) or mine.shape != want.shape:
            raise _fail(f"shape of my_top_k(logits (4, 100), {k})", tuple(want.shape),
                        getattr(mine, "shape", type(mine).__name__), "return a (B, V) tensor")  # fmt: skip
        if not torch.equal(mine, want):
            raise _fail(f"tokens kept per row with k = {k}", _kept(want), _kept(mine),
                        "keep logits >= the k-th largest of the row (torch.topk(...).values[:, -1:]),"
                        " set the others to -inf; leave the kept logits unchanged")  # fmt: skip
    print("my_top_k: the same tokens as buildlm's TopK. Correct!")


def check_top_p(my_top_p) -> None:
    """Your nucleus filter keeps exactly buildlm's tokens (the smallest set reaching p)."""
    logits = torch.randn(6, 200, generator=torch.Generator().manual_seed(1)) * 2
    for p in (0.1, 0.5, 0.9, 0.99):
        mine = my_top_p(logits.clone(), p)
        want = top_p_filter(logits, p)
        if not isinstance(mine, torch.Tensor) or not torch.equal(mine, want):
            got = _kept(mine) if isinstance(mine, torch.Tensor) else type(mine).__name__
            raise _fail(f"tokens kept per row with p = {p}", _kept(want), got,
                        "sort descending; keep a token while the mass of the tokens *before* it "
                        "is below p (so the most likely token always stays)")  # fmt: skip
    print("my_top_p: the same nucleus as buildlm's TopP. Correct!")


SETTINGS = [
    dict(temperature=0),
    dict(temperature=1.0, seed=1),
    dict(temperature=0.7, top_k=20, seed=2),
    dict(temperature=1.0, top_p=0.9, seed=3),
    dict(temperature=1.3, top_k=50, top_p=0.95, seed=4),
]


def check_generate(my_generate, model: nn.Module, idx: torch.Tensor, n: int = 12) -> None:
    """Your sampling loop gives buildlm.infer.generate's tokens for the same settings and seed."""
    for kwargs in SETTINGS:
        mine = my_generate(model, idx, n, **kwargs)
        want = generate(model, idx, n, **kwargs)
        if not isinstance(mine, torch.Tensor) or mine.tolist() != want.tolist():
            got = mine[0, idx.shape[1]:].tolist() if isinstance(mine, torch.Tensor) else mine
            raise _fail(f"my_generate(model, idx, {n}, {kwargs})", want[0, idx.shape[1]:].tolist(), got,
                        "return the prompt and the new ids, (B, T + n); crop to the context; "
                        "temperature 0 is argmax; otherwise divide by the temperature, then top-k, "
                        "then top-p, softmax, torch.multinomial(probs, 1, generator=g) with "
                        "g = torch.Generator().manual_seed(seed)")  # fmt: skip
    print(f"my_generate: buildlm's tokens for all {len(SETTINGS)} settings. Correct!")


def check_kv_cache(cache_cls) -> None:
    """``update`` appends along the time axis and returns everything so far."""
    cache = cache_cls()
    gen = torch.Generator().manual_seed(0)
    k1, v1 = torch.randn(2, 4, 3, 8, generator=gen), torch.randn(2, 4, 3, 8, generator=gen)
    k2, v2 = torch.randn(2, 4, 1, 8, generator=gen), torch.randn(2, 4, 1, 8, generator=gen)
    if len(cache) != 0:
        raise _fail("len(KVCache())", 0, len(cache), "an empty cache holds no positions")
    cache.update(k1, v1)
    k, v = cache.update(k2, v2)
    if len(cache) != 4 or tuple(k.shape) != (2, 4, 4, 8):
        raise _fail("len(cache) and keys' shape after 3 + 1 positions", (4, (2, 4, 4, 8)),
                    (len(cache), tuple(k.shape)), "torch.cat along dim=2, the time axis")  # fmt: skip
    if not (torch.equal(k, torch.cat([k1, k2], 2)) and torch.equal(v, torch.cat([v1, v2], 2))):
        raise _fail("keys and values after two updates", "old ones first, then the new",
                    "something else", "append at the end, keep keys and values apart")  # fmt: skip
    print("KVCache: appends along time and returns all keys and values. Correct!")


def yours(model_cls, reference: nn.Module) -> nn.Module:
    """``model_cls(config)`` with ``reference``'s weights (``load_state_dict``), in eval mode."""
    mine = model_cls(reference.config)
    mine.load_state_dict(reference.state_dict(), strict=True)
    return mine.eval()


def check_attention(model_cls, reference: nn.Module, idx: torch.Tensor, cache_cls) -> nn.Module:
    """Your GPT (your attention) loads buildlm's weights and gives its logits, with and without cache."""
    mine = yours(model_cls, reference)
    with torch.no_grad():
        want = reference(idx)
        full = mine(idx)
        diff = float((full - want).abs().max())
        if diff > 1e-4:
            raise _fail("max |logit difference| without a cache, against buildlm's GPT", "< 1e-4",
                        f"{diff:.3g}", "split qkv into q, k, v of d_model each; heads: view "
                        "(B, T, h, hd) then transpose(1, 2); causal mask; scale by 1/sqrt(hd)")  # fmt: skip
        caches = [cache_cls() for _ in mine.blocks]
        split = idx.shape[1] - 3
        pieces = [mine(idx[:, :split], caches)]  # the prompt at once, then one token at a time
        pieces += [mine(idx[:, t : t + 1], caches) for t in range(split, idx.shape[1])]
        cached = torch.cat(pieces, dim=1)
        diff = float((cached - want).abs().max())
        if diff > 1e-4:
            raise _fail("max |logit difference| with the cache (prefill, then one token at a time)",
                        "< 1e-4", f"{diff:.3g}",
                        "with a cache, append the new k, v first and attend over all of them; the "
                        "new queries sit at positions past .. past + T - 1 (past = keys before), "
                        "so query i may read keys 0 .. past + i")  # fmt: skip
    print("CausalSelfAttention: buildlm's logits, without and with the cache. Correct!")
    return mine


def check_generate_cached(generate_cached, mine: nn.Module, reference: nn.Module, tokenizer,
                          prompt: str, n: int = 60) -> None:  # fmt: skip
    """Your cached greedy loop gives buildlm's generate and Engine tokens."""
    ids = tokenizer.encode(prompt)
    out = generate_cached(mine, torch.tensor([ids]), n)
    want = generate(reference, torch.tensor([ids]), n, temperature=0)[0, len(ids):].tolist()
    engine = Engine(reference, tokenizer, arrange_weights=False)
    from_engine = engine.generate([ids], max_new_tokens=n, temperature=0, stop_token_ids=())[0].token_ids
    got = out[0, len(ids):].tolist() if isinstance(out, torch.Tensor) else out
    if got != want or want != from_engine:
        raise _fail(f"{n} greedy tokens after {prompt!r}", want, got,
                    "prefill the prompt once with fresh caches, then feed only the newest token; "
                    "return the prompt and the new ids, (1, T + n)")  # fmt: skip
    print(f"generate_cached: the same {n} tokens as buildlm's generate and Engine. Correct!")


def best_time(fn, *args, repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs of ``fn(*args)``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best
