"""Where a decode step's time goes: kernels per step, GPU time per kernel, replay vs engine loop.

For one batch size and dtype (GPT-2 124M shape, random weights), three views of a decode step:

1. the kernels of one fixed-shape step (`buildlm.infer.static_decode.StaticDecodeStep`, run
   without a graph under ``torch.profiler``), eager and compiled: how many, and the device time
   of the costliest, grouped by name;
2. the time of a bare CUDA-graph replay of that step (no Python around it), i.e. the device time
   of a step;
3. the Engine's decode rate (``Engine.stats``), which adds the per-step Python (picking the
   token, bookkeeping, copying inputs into the graph's buffers).

    python benchmarks/decode_profile.py --batch 1 --dtype bf16    # on a GPU
    python benchmarks/decode_profile.py --tiny                    # CPU, seconds (CI)
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from buildlm.infer.engine import Engine
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.static_decode import StaticDecodeStep
from buildlm.model import GPT, ModelConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def kernel_table(step: StaticDecodeStep, device: torch.device, steps: int = 5) -> None:
    """Profile ``steps`` decode steps; print kernels per step and the top ones by device time."""
    tokens = torch.zeros(step.cache.batch_size, dtype=torch.long, device=device)
    for _ in range(2):  # warm-up (and compilation) outside the profile
        step(tokens)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(tokens)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in prof.events():
        on_device = event.device_type == torch.autograd.DeviceType.CUDA
        if on_device or (device.type == "cpu" and event.cpu_parent is None):
            name = event.name[:70]
            totals[name] += (event.device_time if on_device else event.cpu_time) / steps
            counts[name] += 1
    n = sum(counts.values()) / steps
    print(f"    {n:.0f} {'kernels' if device.type == 'cuda' else 'top-level ops'} per step, "
          f"{sum(totals.values()):.1f} us of {'device' if device.type == 'cuda' else 'CPU'} time")  # fmt: skip
    for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {us:8.1f} us  {counts[name] / steps:5.1f}x  {name}")


def replay_time(step: StaticDecodeStep, device: torch.device, n: int = 200) -> float:
    """Seconds per bare graph replay (the device time of one step); n + 5 < the cache's slots."""
    batch = step.cache.batch_size
    step.start(None, torch.zeros(batch, 1, dtype=torch.long, device=device))  # back to slot 0
    for _ in range(5):
        step.graph.replay()
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step.graph.replay()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (CI)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--cache", type=int, default=256, help="cache positions (default 256)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled step")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    overrides = dict(vocab_size=50257, context_length=1024)
    if args.tiny:
        overrides = dict(vocab_size=512, context_length=64, d_model=64, n_layers=2, n_heads=4)
        args.cache = 32
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("gpt2-124m", **overrides)).to(device, DTYPES[args.dtype]).eval()
    print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; "
          f"batch {args.batch}, {args.dtype}, cache {args.cache}")  # fmt: skip
    with torch.inference_mode():
        for compiled in (False,) if args.no_compile else (False, True):
            label = "compiled" if compiled else "eager"
            cache = StaticKVCache.for_model(model, args.batch, max_len=args.cache)
            step = StaticDecodeStep(model, cache, compile=compiled, cuda_graph=False)
            step.start(None, torch.zeros(args.batch, 1, dtype=torch.long, device=device))
            print(f"  {label} step:")
            kernel_table(step, device)
            if device.type == "cuda":
                cache = StaticKVCache.for_model(model, args.batch, max_len=args.cache)
                graphed = StaticDecodeStep(model, cache, compile=compiled)
                seconds = replay_time(graphed, device)
                print(f"    bare graph replay: {seconds * 1e6:.1f} us/step = "
                      f"{args.batch / seconds:,.0f} tok/s")  # fmt: skip
    ids = torch.randint(0, model.config.vocab_size, (args.batch, 16)).tolist()
    for compiled in (False,) if args.no_compile else (False, True):
        engine = Engine(model, compile=compiled, static_decode=True)
        for _ in range(2):
            engine.generate(ids, max_new_tokens=100 if not args.tiny else 8, temperature=0,
                            stop_token_ids=())  # fmt: skip
        per_step = engine.stats.decode_s / max(engine.stats.decode_steps, 1)
        print(f"  Engine ({'compiled' if compiled else 'eager'} step{', graph' if device.type == 'cuda' else ''}): "
              f"{per_step * 1e6:.1f} us/step, {engine.stats.decode_tokens_per_s:,.0f} tok/s")  # fmt: skip


if __name__ == "__main__":
    main()
