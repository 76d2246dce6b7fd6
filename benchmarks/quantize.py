"""Weight-only int8 quantization: what it costs in perplexity and what it saves in memory and time.

1. Quality: a small GPT is trained for a few hundred steps on the bundled Shakespeare (a BPE of
   1,024 tokens), then its validation perplexity is measured in fp32 and after
   ``quantize_int8`` (same windows, same run).
2. Memory and speed: a GPT-2 124M-shaped model (random weights) decodes ``--new-tokens`` tokens
   at batch 1 with the `Engine`, in fp32 and int8; weight bytes read per token are counted by
   ``model_weight_bytes``.

    python benchmarks/quantize.py          # 300 training steps, GPT-2 124M decode
    python benchmarks/quantize.py --tiny   # seconds (CI)
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from buildlm.data.corpora import load_corpus
from buildlm.infer.engine import Engine
from buildlm.model import GPT, ModelConfig
from buildlm.model.quantize import model_weight_bytes, quantize_int8
from buildlm.tokenizer import Tokenizer


@torch.no_grad()
def val_loss(model: GPT, windows: torch.Tensor) -> float:
    losses = []
    for batch in windows.split(16):
        logits = model(batch[:, :-1])
        losses.append(F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).item())
    return float(np.mean(losses))


def train_small(steps: int, chars: int | None) -> tuple[GPT, torch.Tensor]:
    text = load_corpus("shakespeare")[:chars]
    cut = int(len(text) * 0.9)
    tok = Tokenizer.train(text[:cut], 1024, progress=False)
    train = torch.tensor(tok.encode_ordinary(text[:cut]))
    val = torch.tensor(tok.encode_ordinary(text[cut:]))
    ctx = 128
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=ctx))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(train) - ctx - 1, (32,), generator=gen)
        batch = torch.stack([train[s : s + ctx + 1] for s in starts])
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    n = (len(val) - 1) // (ctx + 1)
    windows = val[: n * (ctx + 1)].view(n, ctx + 1)[:64]
    return model.eval(), windows


def decode_speed(model: GPT, new_tokens: int, repeats: int = 3) -> float:
    """Batch-1 tokens/s of the Engine, best of ``repeats`` (after a warm-up)."""
    engine = Engine(model)
    prompt = [[1, 2, 3, 4, 5, 6, 7, 8]]
    engine.generate(prompt, max_new_tokens=2, temperature=0, stop_token_ids=())  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.generate(prompt, max_new_tokens=new_tokens, temperature=0, stop_token_ids=())
        best = min(best, time.perf_counter() - t0)
    return new_tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="seconds (CI)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chars = None
    shape = ModelConfig.preset("gpt2-124m")
    if args.tiny:
        args.steps, args.new_tokens, chars = 5, 4, 100_000
        shape = ModelConfig.preset("gpt2-124m", vocab_size=512, d_model=64, n_layers=2, n_heads=4)

    model, windows = train_small(args.steps, chars)
    fp32 = val_loss(model, windows)
    int8 = val_loss(quantize_int8(copy.deepcopy(model)), windows)
    print(f"quality: tiny GPT trained {args.steps} steps on Shakespeare, {len(windows)} val windows")
    print(f"  val loss fp32 {fp32:.4f} (ppl {math.exp(fp32):.2f}); int8 {int8:.4f} (ppl {math.exp(int8):.2f})")
    print(f"  perplexity change: {math.exp(int8 - fp32) - 1:+.3%}")

    torch.manual_seed(0)
    big = GPT(shape).eval()
    q8 = quantize_int8(copy.deepcopy(big))
    bytes32, bytes8 = model_weight_bytes(big), model_weight_bytes(q8)
    speed32 = decode_speed(big, args.new_tokens)
    speed8 = decode_speed(q8, args.new_tokens)
    print(f"speed and memory: GPT-2 {shape.d_model}d x {shape.n_layers}L, batch 1, {args.threads} threads")
    print(f"  weight bytes per token: fp32 {bytes32 / 1e6:.0f} MB, int8 {bytes8 / 1e6:.0f} MB ({bytes32 / bytes8:.2f}x less)")
    print(f"  decode: fp32 {speed32:.1f} tok/s, int8 {speed8:.1f} tok/s ({speed8 / speed32:.2f}x)")


if __name__ == "__main__":
    main()
