"""``--train.precision auto``: train in bf16 where this machine computes bf16 clearly faster.

Mixed precision pays only where the hardware has it. On a GPU with bf16 support (Ampere and
later) bf16 matmuls run at several times the fp32 rate. On a CPU it depends on the instruction
set: with AVX512-BF16 or AMX a bf16 matmul runs at 2x the fp32 rate or more; without them PyTorch
emulates bf16 and the same matmul can be many times *slower*. A flag cannot know which machine it
runs on, so ``auto`` asks the machine:

- CUDA: bf16 when ``torch.cuda.is_bf16_supported()``, else fp32 (fp16 would need loss scaling;
  choose it yourself with ``--train.precision fp16``);
- CPU: time a square matmul in fp32 and in bf16 (a fraction of a second) and choose bf16 when it
  runs at least `FASTER` times the fp32 rate. The measurement is cached per CPU model, flags,
  thread count and PyTorch version (``~/.cache/buildlm/precision.json``), so it runs once;
- anything else (Apple MPS): fp32.

The choice is printed with the two rates, so a run says which it took and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from buildlm.atomic import atomic_write_json
from buildlm.device import DTYPES, check_dtype

FASTER = 1.5
"""bf16 must beat fp32 by this factor: autocast adds casts, and bf16 loses precision."""

SIZE = 512  # the matmul timed: big enough to reach the machine's rate, small enough to be quick


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` chose and why: the two measured rates (FLOP/s), None where not measured."""

    precision: str
    reason: str
    fp32_flops: float | None = None
    bf16_flops: float | None = None


def matmul_rate(dtype: torch.dtype, size: int = SIZE, seconds: float = 0.15) -> float:
    """FLOP/s of a (size x size) @ (size x size) matmul in ``dtype`` on the CPU (best of runs)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up: library initialisation, caches
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def cpu_key() -> str:
    """What the measurement depends on: the CPU model and flags, threads, PyTorch's version."""
    model = flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].strip()
    except OSError:
        model = platform.processor() or platform.machine()
    text = f"{model}|{flags}|{torch.get_num_threads()}|{torch.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path() -> Path:
    """Where measurements are kept: ``$XDG_CACHE_HOME/buildlm`` or ``~/.cache/buildlm``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "buildlm" / "precision.json"


def measured_rates(measure: Callable[[torch.dtype], float] = matmul_rate) -> tuple[float, float]:
    """(fp32, bf16) matmul FLOP/s of this CPU: from the cache, or measured and cached."""
    path, key = cache_path(), cpu_key()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    entry = cached.get(key) if isinstance(cached, dict) else None
    if isinstance(entry, dict) and {"fp32", "bf16"} <= entry.keys():
        return float(entry["fp32"]), float(entry["bf16"])
    rates = measure(torch.float32), measure(torch.bfloat16)
    cached = cached if isinstance(cached, dict) else {}
    cached[key] = {"fp32": rates[0], "bf16": rates[1]}
    try:  # a cache that cannot be written only means measuring again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cached)
    except OSError:
        pass
    return rates


def choose_precision(
    device: torch.device, measure: Callable[[torch.dtype], float] = matmul_rate
) -> PrecisionChoice:
    """The precision ``auto`` means on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", "this GPU supports bf16")
        return PrecisionChoice("fp32", "this GPU has no bf16")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"no measured mixed precision on {device.type}")
    fp32, bf16 = measured_rates(measure)
    ratio = bf16 / fp32
    rates = f"bf16 matmuls at {ratio:.2f}x the fp32 rate ({bf16 / 1e9:.0f} vs {fp32 / 1e9:.0f} GFLOP/s)"
    if ratio >= FASTER:
        return PrecisionChoice("bf16", f"{rates} on this CPU", fp32, bf16)
    return PrecisionChoice("fp32", f"{rates} on this CPU: not {FASTER:g}x faster", fp32, bf16)


def resolve_precision(
    name: str,
    device: torch.device,
    log: Callable[[str], None] = print,
    agree: Callable[[str], str] | None = None,
) -> str:
    """The precision a run trains in: ``name``, or for ``"auto"`` `choose_precision`'s choice,
    printed. ``agree`` (a distributed run's broadcast from rank 0) makes every rank take rank
    0's choice. A precision the device does not compute in (bf16 on a GPU without it, or on
    Apple MPS before macOS 14) is a one-line error (`buildlm.device.check_dtype`)."""
    if name in DTYPES:
        check_dtype(DTYPES[name], device, "--train.precision")
    if name != "auto":
        return name
    choice = choose_precision(device)
    precision = agree(choice.precision) if agree is not None else choice.precision
    log(f"precision auto: {precision} ({choice.reason})")
    return precision
