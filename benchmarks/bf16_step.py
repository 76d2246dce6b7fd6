"""A bf16 autocast training step on the CPU: its share of the bf16 matmul peak, and where it goes.

One GPT-2 124M training step (forward, loss, backward, fused AdamW) under bf16 autocast, timed
two ways on the same model and optimizer, interleaved so that other load hits both alike:

- ``before``: the logits of ``model(x)`` and ``F.cross_entropy(logits.float(), y)``, the step
  ``benchmarks/train.py`` times (bf16 logits copied to full-size fp32, then log-softmax);
- ``after``: what `buildlm.train.Trainer` does under bf16 now, the final hidden states into
  `buildlm.train.linear_cross_entropy` (head + loss a few rows at a time, the logits' gradient
  written in the forward pass).

"% of peak" is the step's FLOPs (``GPT.flops_per_token``, as in ``train.py``) per second over
the matmul peak measured in this run for that dtype (best of 5 square 2048^3 products). Then
torch.profiler records one step of each and sorts every op's own (self) time into kinds:
matmuls, dtype casts, attention, the loss over the 50,257-way head, the optimizer, and the rest
(norms, GELU, adds, bias gradients, copies). An fp32 step is timed too, for its share of the
fp32 peak.

    python benchmarks/bf16_step.py              # GPT-2 124M, batch 4 x 256, 2 threads (~1-2 min)
    python benchmarks/bf16_step.py --tiny       # a tiny shape, seconds (CI)
    python benchmarks/bf16_step.py --threads 1 --steps 1 --no-fp32   # shares on a busy machine

On a shared machine the seconds mean little; the profile's shares with ``--threads 1`` are the
steadier figure (with two threads a descheduled thread stalls its partner at every barrier, and
short parallel ops look longer than they are).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import profile

from buildlm.model import GPT, ModelConfig
from buildlm.train.linear_cross_entropy import linear_cross_entropy
from train import keep_freed_memory, matmul_peak

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::matmul"}
CASTS = {"aten::to", "aten::_to_copy", "ToCopyBackward0"}
KINDS = ("matmul", "cast", "attention", "loss", "optimizer", "other")


def cpu_description() -> str:
    """The CPU's model name and the flags that decide bf16 speed, from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = [f for f in FLAGS if f in flags]
    return f"{model}; flags: {' '.join(have) or 'none of ' + ', '.join(FLAGS)}"


def kind_of(event) -> str:
    """Which kind of work an op's own time is, from its name and the ops that called it."""
    if event.name in MATMULS:
        return "matmul"
    names = []
    node = event
    while node is not None:
        names.append(node.name)
        node = node.cpu_parent
    for name in names:  # innermost first: a cast inside attention is a cast
        low = name.lower()
        if name in CASTS or "tocopybackward" in low:
            return "cast"
        if "scaled_dot_product" in low or "flash_attention" in low:
            return "attention"
        if any(k in low for k in ("log_softmax", "logsoftmax", "nll_loss", "nllloss", "cross_entropy",
                                  "crossentropy")):  # fmt: skip
            return "loss"
        if "optimizer" in low or "adam" in low:
            return "optimizer"
    return "other"


def breakdown(prof) -> tuple[dict[str, float], dict[str, float]]:
    """Self CPU seconds per kind, and per op name, of one profiled step (main thread's ops)."""
    kinds: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for event in prof.events():
        seconds = event.self_cpu_time_total / 1e6
        kinds[kind_of(event)] += seconds
        ops[event.name] += seconds
    return kinds, ops


def make_step(model: GPT, opt: torch.optim.Optimizer, variant: str) -> Callable[..., float]:
    """One training step of ``variant`` (before / after / fp32); returns its wall seconds."""

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        if variant == "fp32":
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                if variant == "before":
                    logits = model(x)  # (B, T, V) bf16
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                else:
                    hidden = model.hidden_states(x)  # (B, T, d)
                    loss = linear_cross_entropy(hidden, model.plain_head_weight(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shape, runs in seconds (CI)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--no-fp32", action="store_true", help="skip the fp32 step")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled steps")
    parser.add_argument("--top", type=int, default=12, help="ops listed for each profile")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    malloc_tuned = keep_freed_memory()
    torch.manual_seed(0)
    if args.tiny:
        cfg = ModelConfig.preset("gpt2-124m", vocab_size=512, d_model=64, n_layers=2, n_heads=4)
        args.batch, args.seq, args.steps, peak_n = 2, 32, 1, 256
    else:
        cfg = ModelConfig.preset("gpt2-124m")
        peak_n = 2048
    print(f"CPU: {cpu_description()}")
    print(f"torch {torch.__version__}, {args.threads} threads, malloc thresholds raised: {malloc_tuned}")
    peak = {"fp32": matmul_peak(peak_n, torch.float32, 5), "bf16": matmul_peak(peak_n, torch.bfloat16, 5)}
    for name, flops in peak.items():
        print(f"matmul peak {name} ({peak_n}^3): {flops / 1e9:8.1f} GFLOP/s")
    if peak["bf16"] < peak["fp32"]:
        print("bf16 matmuls are slower than fp32 on this CPU (no bf16 instructions?): expect little")

    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    step_flops = model.flops_per_token(args.seq) * args.batch * args.seq
    print(
        f"GPT-2 shape {cfg.d_model}d x {cfg.n_layers}L, vocab {cfg.vocab_size}, batch "
        f"{args.batch} x {args.seq}: {step_flops / 1e9:.1f} GFLOP per step (fwd + bwd)"
    )

    variants = ["before", "after"] + ([] if args.no_fp32 else ["fp32"])
    steps = {v: make_step(model, opt, v) for v in variants}
    for step in steps.values():  # warm-up: allocator, kernels, optimizer state
        step(x, y)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.steps):
        for v, step in steps.items():
            times[v].append(step(x, y))

    print(f"\n{'step':<22}{'s/step':>8}{'tok/s':>9}{'% of peak':>11}")
    for v in variants:
        wall = statistics.median(times[v])
        dtype = "fp32" if v == "fp32" else "bf16"
        label = {"before": "bf16 before", "after": "bf16 after", "fp32": "fp32"}[v]
        share = step_flops / wall / peak[dtype]
        print(f"{label:<22}{wall:8.3f}{args.batch * args.seq / wall:9.1f}{share:10.1%}  (of {dtype})")
    print(f"medians of {args.steps} interleaved steps after one warm-up step each")
    if args.no_profile:
        return

    results = {}
    for v in ("before", "after"):
        with profile() as prof:
            steps[v](x, y)
        results[v] = breakdown(prof)
    print("\nwhere one bf16 step's time goes (profiler self time by kind of op)")
    print(f"{'kind':<12}{'before s':>10}{'share':>8}{'after s':>10}{'share':>8}")
    totals = {v: sum(results[v][0].values()) for v in results}
    for kind in KINDS:
        cells = "".join(
            f"{results[v][0].get(kind, 0.0):10.3f}{results[v][0].get(kind, 0.0) / totals[v]:8.1%}"
            for v in ("before", "after")
        )
        print(f"{kind:<12}{cells}")
    print(f"{'total':<12}{totals['before']:10.3f}{'':8}{totals['after']:10.3f}")
    for v in ("before", "after"):
        print(f"\ntop ops, {v} (self s, share)")
        for name, sec in sorted(results[v][1].items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {name[:60]:<60}{sec:8.3f}{sec / totals[v]:8.1%}")


if __name__ == "__main__":
    main()
