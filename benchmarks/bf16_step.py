"""A bf16 autocast training step on the CPU: its share of the bf16 matmul peak, and where it goes.

One GPT-2 124M training step (forward, loss, backward, fused AdamW) under bf16 autocast, timed
two ways, each in its own process (glibc's malloc settings hold for a whole process):

- ``before``: the logits of ``model(x)`` and ``F.cross_entropy(logits.float(), y)`` (bf16
  logits copied to full-size fp32, then log-softmax), with the malloc setting
  ``benchmarks/train.py`` had (a trim threshold that glibc read as 0: every freed buffer went
  back to the kernel, and the next step faulted it in again);
- ``after``: what `buildlm.train.Trainer` does under bf16 on the CPU now: freed memory kept
  (`buildlm.train.host_memory`), the final hidden states into
  `buildlm.train.linear_cross_entropy` (head + loss a few rows at a time, the logits' gradient
  written in the forward pass).

Within each process an fp32 step (the plain loss) is interleaved with the bf16 one, for its
share of the fp32 peak; page faults per step are counted (a figure load does not disturb).

"% of peak" is the step's FLOPs (``GPT.flops_per_token``, as in ``train.py``) per second over
the matmul peak measured in this run for that dtype (best of 5 square 2048^3 products). Then
torch.profiler records one step of each and sorts every op's own (self) time into kinds:
matmuls, dtype casts, attention, the loss over the 50,257-way head, the optimizer, and the rest
(norms, GELU, adds, bias gradients, copies).

    python benchmarks/bf16_step.py              # GPT-2 124M, batch 4 x 256, 2 threads (~2 min)
    python benchmarks/bf16_step.py --tiny       # a tiny shape, seconds (CI)
    python benchmarks/bf16_step.py --threads 1 --steps 1 --no-fp32   # shares on a busy machine

On a shared machine the seconds mean little; the profile's shares with ``--threads 1`` are the
steadier figure (with two threads a descheduled thread stalls its partner at every barrier, and
short parallel ops look longer than they are).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import profile

from buildlm.model import GPT, ModelConfig
from buildlm.train.host_memory import keep_freed_memory
from buildlm.train.linear_cross_entropy import linear_cross_entropy
from train import matmul_peak

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::matmul"}
CASTS = {"aten::to", "aten::_to_copy", "ToCopyBackward0"}
KINDS = ("matmul", "cast", "attention", "loss", "optimizer", "other")


def cpu_description() -> str:
    """The CPU's model name and the flags that decide bf16 speed, from /proc/cpuinfo."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    have = [f for f in FLAGS if f in flags]
    return (
        f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')} model "
        f"{info.get('model', '?')}), {os.cpu_count()} logical CPUs; flags: "
        f"{' '.join(have) or 'none of ' + ', '.join(FLAGS)}"
    )


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
    """One training step: bf16 ``before`` / ``after`` (see the module docstring) or ``fp32``
    (the plain loss); returns its wall seconds and leaves its page faults in ``step.faults``."""

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
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
        step.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults  # type: ignore[attr-defined]
        return time.perf_counter() - t0

    return step


def set_malloc(variant: str) -> str:
    """glibc's settings for this process: ``after`` keeps freed memory (what the Trainer does
    now); ``before`` is what ``benchmarks/train.py`` set until this change: mmap threshold 1 GiB
    and a trim threshold meant as 1 << 34 that mallopt read as 0 (trim at every free)."""
    if variant == "after":
        return f"kept (buildlm.train.host_memory): {keep_freed_memory()}"
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, ctypes.c_int(1 << 30)) and libc.mallopt(-1, ctypes.c_int(0))
    except (OSError, AttributeError):
        ok = False
    return f"mmap 1 GiB, trim 0 (the old setting): {bool(ok)}"


def run_variant(args: argparse.Namespace) -> dict:
    """Time and profile one variant in this process; print its lines, return its figures."""
    v = args.variant
    malloc = set_malloc(v)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.tiny:
        cfg = ModelConfig.preset("gpt2-124m", vocab_size=512, d_model=64, n_layers=2, n_heads=4)
        args.batch, args.seq, args.steps, peak_n = 2, 32, 1, 256
    else:
        cfg = ModelConfig.preset("gpt2-124m")
        peak_n = 2048
    peak = {"fp32": matmul_peak(peak_n, torch.float32, 5), "bf16": matmul_peak(peak_n, torch.bfloat16, 5)}
    print(f"[{v}] malloc: {malloc}; matmul peaks ({peak_n}^3): fp32 {peak['fp32'] / 1e9:.1f}, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s", flush=True)  # fmt: skip

    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    step_flops = model.flops_per_token(args.seq) * args.batch * args.seq
    kinds = [v] + ([] if args.no_fp32 else ["fp32"])
    steps = {k: make_step(model, opt, k) for k in kinds}
    for step in steps.values():  # warm-up: allocator, kernels, optimizer state
        step(x, y)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    faults: dict[str, list[int]] = {k: [] for k in kinds}
    for _ in range(args.steps):
        for k, step in steps.items():
            times[k].append(step(x, y))
            faults[k].append(step.faults)
    # The attention term of flops_per_token (12 L d_attn T a token) runs inside SDPA, not in
    # the matmul ops; the rest are the matmuls' FLOPs.
    attn_flops = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * args.seq * args.batch * args.seq
    result = {"variant": v, "peak": peak, "step_flops": step_flops, "tokens": args.batch * args.seq,
              "matmul_flops": step_flops - attn_flops}  # fmt: skip
    for k in kinds:
        wall = statistics.median(times[k])
        dtype = "fp32" if k == "fp32" else "bf16"
        fault = int(statistics.median(faults[k]))
        result[k] = {"wall": wall, "of_peak": step_flops / wall / peak[dtype], "faults": fault}
        print(f"[{v}] {k:<7} {wall:7.3f} s/step  {result[k]['of_peak']:6.1%} of the {dtype} peak, "
              f"{fault} page faults a step", flush=True)  # fmt: skip
    if not args.no_profile:
        with profile() as prof:
            steps[v](x, y)
        by_kind, by_op = breakdown(prof)
        result["kinds"] = by_kind
        result["top"] = sorted(by_op.items(), key=lambda kv: -kv[1])[: args.top]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shape, runs in seconds (CI)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--no-fp32", action="store_true", help="skip the fp32 step")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled steps")
    parser.add_argument("--top", type=int, default=10, help="ops listed for each profile")
    parser.add_argument(
        "--variant", choices=("before", "after"), help="run this one only, in this process"
    )
    args = parser.parse_args()
    if args.variant:  # a child: one variant, its figures as the last line
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return

    print(f"CPU: {cpu_description()}")
    shape = "tiny (CI)" if args.tiny else f"GPT-2 124M, batch {args.batch} x {args.seq}"
    print(f"torch {torch.__version__}, {args.threads} threads, {shape}")
    # Each variant in its own process: glibc's settings and heap are per process.
    results = {}
    for v in ("before", "after"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", v]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        for line in out.stdout.splitlines():
            if line.startswith("RESULT "):
                results[v] = json.loads(line[len("RESULT "):])
            elif line.startswith("["):
                print(line)
        if out.returncode != 0 or v not in results:
            sys.exit(f"the {v} run failed:\n{out.stderr[-3000:]}")
    report(results)


def report(results: dict) -> None:
    """The two variants side by side: time, share of peak, and the profile by kind."""
    before, after = results["before"], results["after"]
    print(f"\n{results['after']['step_flops'] / 1e9:.1f} GFLOP per step (fwd + bwd, GPT.flops_per_token)")
    print(f"{'step':<14}{'s/step':>9}{'tok/s':>9}{'% of peak':>11}{'faults':>9}")
    rows = [("bf16 before", before, "before", "bf16"), ("bf16 after", after, "after", "bf16")]
    rows += [(f"fp32 ({r['variant']})", r, "fp32", "fp32") for r in (before, after) if "fp32" in r]
    for label, r, key, dtype in rows:
        m = r[key]
        print(f"{label:<14}{m['wall']:9.3f}{r['tokens'] / m['wall']:9.1f}{m['of_peak']:10.1%}"
              f"{m['faults']:9d}  ({dtype} peak {r['peak'][dtype] / 1e9:.1f} GFLOP/s)")  # fmt: skip
    print("faults: minor page faults per step (memory the kernel had to map and zero anew)")
    if "kinds" not in before:
        return
    print("\nwhere one bf16 step's time goes (torch.profiler self time by kind of op)")
    print(f"{'kind':<12}{'before s':>10}{'share':>8}{'after s':>10}{'share':>8}")
    totals = {v: sum(results[v]["kinds"].values()) for v in results}
    for kind in KINDS:
        cells = "".join(
            f"{results[v]['kinds'].get(kind, 0.0):10.3f}{results[v]['kinds'].get(kind, 0.0) / totals[v]:8.1%}"
            for v in ("before", "after")
        )
        print(f"{kind:<12}{cells}")
    print(f"{'total':<12}{totals['before']:10.3f}{'':8}{totals['after']:10.3f}")
    print("\n% of peak = (matmuls' own rate / peak) x (matmul share of the step) + attention's part:")
    for v in ("before", "after"):
        r = results[v]
        rate = r["matmul_flops"] / max(r["kinds"].get("matmul", 0.0), 1e-9)
        share = r["kinds"].get("matmul", 0.0) / totals[v]
        print(f"  {v:<7} matmuls ran at {rate / 1e9:.1f} GFLOP/s = {rate / r['peak']['bf16']:.1%} of the "
              f"bf16 peak, and took {share:.1%} of the profiled step")  # fmt: skip
    for v in ("before", "after"):
        print(f"\ntop ops, {v} (self s, share)")
        for name, sec in results[v]["top"]:
            print(f"  {name[:60]:<60}{sec:8.3f}{sec / totals[v]:8.1%}")


if __name__ == "__main__":
    main()
