"""Training speed: buildlm GPT vs Hugging Face GPT2LMHeadModel, same shape, same step.

A full training step is timed for each model: forward, cross-entropy on the logits, backward,
``torch.optim.AdamW(fused=True)`` step (same optimizer and settings for both). Under bf16
buildlm's loss is the one its Trainer computes, the LM head fused with the cross-entropy
(`buildlm.train.linear_cross_entropy`); ``--plain-loss`` gives it Hugging Face's loss instead. Models are built at the GPT-2
124M shape with random weights and no dropout; Hugging Face uses ``attn_implementation="sdpa"``.
Measurements are interleaved (HF, buildlm, HF, buildlm, ...) so that load from other processes on
a shared machine hits both alike, and each figure is the median over the measured steps.

Printed: tokens/s for fp32 and bf16 autocast, the ratio to HF fp32, and MFU (model FLOPs
utilisation: achieved FLOP/s counted with ``GPT.flops_per_token`` divided by the matmul peak
measured in this same run for that dtype).

    python benchmarks/train.py            # GPT-2 124M, batch 4 x 256 tokens, 2 threads
    python benchmarks/train.py --tiny     # a tiny shape, a few seconds (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F

from _hf_gpt2 import build_hf_gpt2
from buildlm.model import GPT, ModelConfig
from buildlm.train.host_memory import keep_freed_memory  # why: see its docstring
from buildlm.train.linear_cross_entropy import linear_cross_entropy


def matmul_peak(n: int, dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of an (n x n) @ (n x n) matmul in ``dtype``: the practical compute ceiling."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


Step = Callable[[torch.Tensor, torch.Tensor], tuple[float, float]]
LossOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, targets) -> loss


def plain_loss(logits_of: Callable[[torch.Tensor], torch.Tensor]) -> LossOf:
    """The loss every model can give: its logits, copied to fp32, into F.cross_entropy."""

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits_of(x)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    return loss_of


def trainer_loss(model: GPT, bf16: bool) -> LossOf:
    """The loss buildlm's Trainer computes: under bf16 the head fused with the cross-entropy
    (`buildlm.train.linear_cross_entropy`, no full-size fp32 logits), else the plain one."""
    if not bf16:
        return plain_loss(model)
    return lambda x, y: linear_cross_entropy(model.hidden_states(x), model.plain_head_weight(), y)


def make_step(model: torch.nn.Module, loss_of: LossOf, bf16: bool) -> Step:
    """A closure running one full training step; returns (wall seconds, process CPU seconds)."""
    # fused=True: one kernel updates every parameter (PyTorch's CPU default is a Python loop
    # over tensors). Same optimizer and settings for both models.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)

    def autocast() -> AbstractContextManager:
        if bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with autocast():
            loss = loss_of(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, time.process_time() - c0

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shape, runs in seconds (CI)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast runs")
    parser.add_argument(
        "--force-bf16", action="store_true", help="time bf16 even where its matmuls are slow"
    )
    parser.add_argument(
        "--default-malloc", action="store_true", help="skip keep_freed_memory (glibc defaults)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print torch.profiler's top ops for each run"
    )
    parser.add_argument(
        "--plain-loss",
        action="store_true",
        help="buildlm's bf16 loss from full fp32 logits too (default: its Trainer's fused loss)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    malloc_tuned = False if args.default_malloc else keep_freed_memory()
    torch.manual_seed(0)
    if args.tiny:
        cfg = ModelConfig.preset("gpt2-124m", vocab_size=512, d_model=64, n_layers=2, n_heads=4)
        args.batch, args.seq, args.warmup, args.steps = 2, 32, 1, 2
        peak_n = 256
    else:
        cfg = ModelConfig.preset("gpt2-124m")
        peak_n = 2048

    peak = {"fp32": matmul_peak(peak_n, torch.float32, 5)}
    skip_bf16 = ""
    if not args.no_bf16:
        # Probe at a small size first: a CPU without bf16 instructions (AVX2 only, no
        # AVX512-BF16/AMX) runs bf16 matmuls through a slow fallback, >100x below fp32, and a
        # 124M-parameter bf16 step would take hours. Such a machine has no bf16 figure to give.
        probe = matmul_peak(256, torch.bfloat16, 2)
        if probe < peak["fp32"] / 4:
            skip_bf16 = (
                f"bf16 skipped: this CPU's bf16 matmul runs at {probe / 1e9:.1f} GFLOP/s, "
                f"{peak['fp32'] / probe:.0f}x below fp32 (no bf16 instructions); "
                "pass --force-bf16 to time it anyway"
            )
        if not skip_bf16 or args.force_bf16:
            peak["bf16"] = matmul_peak(peak_n, torch.bfloat16, 5)
            skip_bf16 = ""
    print(
        f"threads={args.threads}  shape=GPT-2 {cfg.d_model}d x {cfg.n_layers}L, "
        f"vocab {cfg.vocab_size}, batch {args.batch} x {args.seq} tokens"
    )
    for name, flops in peak.items():
        print(f"matmul peak {name} ({peak_n}^3): {flops / 1e9:8.1f} GFLOP/s")

    ours = GPT(cfg)
    hf = build_hf_gpt2(cfg)
    flops_per_token = ours.flops_per_token(args.seq)
    tokens = args.batch * args.seq
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))

    precisions = list(peak)
    if skip_bf16:
        print(skip_bf16)
    runs: dict[tuple[str, str], Step] = {}
    for prec in precisions:
        bf16 = prec == "bf16"
        runs[("hf", prec)] = make_step(hf, plain_loss(lambda i: hf(input_ids=i).logits), bf16)
        ours_loss = plain_loss(ours) if args.plain_loss else trainer_loss(ours, bf16)
        runs[("buildlm", prec)] = make_step(ours, ours_loss, bf16)

    times: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in runs}
    for step in runs.values():  # warm-up (allocator, kernels, optimizer state)
        for _ in range(args.warmup):
            step(x, y)
    for _ in range(args.steps):  # interleaved so background load hits every run alike
        for key, step in runs.items():
            times[key].append(step(x, y))

    if args.profile:
        from torch.profiler import profile

        for (model, prec), step in runs.items():
            with profile() as prof:
                step(x, y)
            print(f"\n== {model} {prec}: where one step's time goes")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    def median(key: tuple[str, str], which: int) -> float:
        return statistics.median(t[which] for t in times[key])

    base_wall, base_cpu = median(("hf", "fp32"), 0), median(("hf", "fp32"), 1)
    print(
        f"\n{'model':<9}{'precision':<10}{'tok/s':>8}{'vs HF fp32':>12}{'MFU':>8}"
        f"{'wall s/step':>13}{'CPU s/step':>12}{'CPU vs HF':>11}"
    )
    for model, prec in times:
        wall, cpu = median((model, prec), 0), median((model, prec), 1)
        tps = tokens / wall
        mfu = tps * flops_per_token / peak[prec]
        print(
            f"{model:<9}{prec:<10}{tps:8.1f}{base_wall / wall:11.2f}x{mfu:8.1%}"
            f"{wall:13.2f}{cpu:12.2f}{base_cpu / cpu:10.2f}x"
        )
    print(
        f"\nmedians of {args.steps} interleaved steps after {args.warmup} warm-up steps; "
        f"malloc thresholds raised: {malloc_tuned}"
    )
    print(
        f"flops/token (fwd+bwd) = {flops_per_token / 1e6:.1f} MFLOP (6N + 12 L d T, see "
        "GPT.flops_per_token); CPU s/step is process CPU time (all threads): a cross-check "
        "when other processes share the cores"
    )


if __name__ == "__main__":
    main()
