"""GPU training speed: GPT-2 124M, 1024-token context, bf16, flash attention, compile, fused AdamW.

Three training loops on the same GPU, one after another, each with the GPT-2 124M shape (768 d,
12 layers, 12 heads, vocab 50,257, tied embeddings), random weights, random token ids (nothing
is downloaded), bf16 autocast, ``torch.compile`` (default mode) and fused AdamW:

- ``HF``: Hugging Face ``GPT2LMHeadModel`` with ``attn_implementation="sdpa"`` (PyTorch's
  scaled-dot-product attention, which runs the flash kernel for causal bf16 attention), the
  peer;
- ``buildlm model``: ``buildlm.model.GPT`` (SDPA with ``is_causal=True``) and
  ``buildlm.train.optim.make_optimizer``, in exactly the HF loop;
- ``buildlm Trainer``: ``buildlm.train.Trainer`` as ``buildlm train`` runs it (its own
  random-window batches from a token array, learning-rate schedule, loss and gradient norm
  read back every step). Only its public API is used: ``Trainer(model, TrainConfig(...),
  TrainData(tokens))`` and ``trainer.train_step()``.

The two "raw" loops run the same step: forward under autocast, cross-entropy on the fp32
logits, backward, gradient clipping at 1.0, AdamW step, on batches already on the GPU; the loss
stays on the GPU (no sync inside a step). A loop runs ``--warmup`` untimed steps (the first one
compiles), then ``--steps`` steps between two ``torch.cuda.synchronize()`` calls.

Printed: tokens/s, ms/step, peak GPU memory (``max_memory_allocated``), the ratio to HF, and
MFU = tokens/s * FLOPs/token / peak, with FLOPs/token from ``GPT.flops_per_token`` (6N + 12 L d T,
the nanoGPT/PaLM count) against two peaks: the data-sheet dense bf16 peak of the GPU (989
TFLOP/s for an H100 SXM or H200; recognised by ``torch.cuda.get_device_name``) and the bf16
matmul rate measured in this run (8192^3). llm.c reports about 50-60% MFU on an H100 for this
model; the target here is at least 50% against the data-sheet peak.

    python benchmarks/train_gpu.py                     # on a CUDA GPU: batch 32 x 1024 tokens
    python benchmarks/train_gpu.py --batch 16 --grad-accum 2
    python benchmarks/train_gpu.py --tiny              # tiny model, CPU, fp32, no compile (CI)
    python benchmarks/train_gpu.py --tiny --precision bf16 --compile   # the GPU path, on CPU
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from _hf_gpt2 import build_hf_gpt2
from buildlm.device import DTYPES, autocast_context
from buildlm.model import GPT, ModelConfig
from buildlm.train import TrainData, Trainer
from buildlm.train.config import TrainConfig
from buildlm.train.optim import make_optimizer

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, FLOP/s, matched against
# torch.cuda.get_device_name() in this order ("NVIDIA H100 80GB HBM3" is the SXM part).
DATASHEET_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
]
PRECISIONS = ("bf16", "fp32")  # of buildlm.device.DTYPES; no fp16: the raw loops have no GradScaler


def datasheet_peak(name: str) -> float | None:
    for key, flops in DATASHEET_BF16:
        if key in name:
            return flops
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5, inner: int = 10
) -> float:
    """FLOP/s of an (n x n) @ (n x n) matmul: the practical compute ceiling, best of ``repeats``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    del a, b
    return 2 * n**3 / best


def hf_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, fused: bool
) -> torch.optim.Optimizer:
    """AdamW as nanoGPT and buildlm set it up: weight decay on the >= 2-D tensors only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused)


def raw_loop(
    model: torch.nn.Module,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    precision: str,
    grad_accum: int,
) -> Callable[[int], torch.Tensor]:
    """A function running one optimizer step over ``grad_accum`` micro-batches; no host sync."""
    device = batches[0][0].device
    params = [p for p in model.parameters() if p.requires_grad]

    def step(k: int) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for i in range(grad_accum):
            x, y = batches[(k * grad_accum + i) % len(batches)]
            with autocast_context(device, precision):
                logits = logits_of(x)  # (B, T, vocab)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            (loss / grad_accum).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total / grad_accum

    return step


def timed(
    step: Callable[[int], object], device: torch.device, warmup: int, steps: int
) -> tuple[float, float, float]:
    """(seconds per step, seconds of the warm-up, peak memory in bytes) of ``steps`` timed steps."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for k in range(warmup):
        step(k)
    sync(device)
    t1 = time.perf_counter()
    for k in range(warmup, warmup + steps):
        out = step(k)
    sync(device)
    t2 = time.perf_counter()
    if isinstance(out, torch.Tensor) and not torch.isfinite(out).item():
        raise FloatingPointError(f"the loss is not finite: {out}")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")
    return (t2 - t1) / steps, t1 - t0, peak


def free(device: torch.device) -> None:
    torch._dynamo.reset()  # compiled graphs hold on to their module
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_hf(cfg, args, device, batches):
    torch.manual_seed(0)
    model = build_hf_gpt2(cfg, use_cache=False).to(device).train()
    forward = torch.compile(model) if args.compile else model
    opt = hf_optimizer(model, 6e-4, 0.1, fused=device.type in ("cuda", "cpu"))
    step = raw_loop(
        model, lambda x: forward(input_ids=x).logits, opt, batches, args.precision, args.grad_accum
    )
    return timed(step, device, args.warmup, args.steps)


def run_buildlm_raw(cfg, args, device, batches):
    torch.manual_seed(0)
    model = GPT(cfg).to(device).train()
    forward = torch.compile(model) if args.compile else model
    opt = make_optimizer(
        model, lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95), device_type=device.type
    )
    step = raw_loop(model, forward, opt, batches, args.precision, args.grad_accum)
    return timed(step, device, args.warmup, args.steps)


def run_trainer(cfg, args, device, tokens, peak):
    torch.manual_seed(0)
    model = GPT(cfg)
    config = TrainConfig(
        max_steps=100_000,
        time_budget_s=None,
        batch_size=args.batch,
        grad_accum_steps=args.grad_accum,
        context_length=args.seq,
        lr=6e-4,
        min_lr=6e-5,
        warmup_steps=10,
        weight_decay=0.1,
        grad_clip=1.0,
        precision=args.precision,
        compile=args.compile,
        device=str(device),
        seed=0,
        peak_flops=peak,
        tensorboard=False,
        progress=False,
    )
    trainer = Trainer(model, config, TrainData(train=tokens))
    return timed(lambda k: trainer.train_step(), device, args.warmup, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model on the CPU, fp32, no compile (CI, seconds)"
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="windows per micro-batch (default 32)"
    )
    parser.add_argument("--seq", type=int, default=1024, help="tokens per window (default 1024)")
    parser.add_argument(
        "--grad-accum", type=int, default=1, help="micro-batches per step (default 1)"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed steps per loop, compilation included"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="default: bf16 (fp32 with --tiny)"
    )
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile both models (default: on, off with --tiny)")  # fmt: skip
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument(
        "--vocab", type=int, default=50257, help="vocabulary (llm.c pads GPT-2's to 50304)"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["hf", "model", "trainer"], help="loops not to run"
    )
    args = parser.parse_args()

    if args.tiny:
        cfg = ModelConfig.preset(
            "gpt2-124m", vocab_size=512, context_length=64, d_model=64, n_layers=2, n_heads=4
        )
        args.batch, args.seq, args.grad_accum = 2, 64, 1
        args.warmup, args.steps = 1, 2
        defaults = ("cpu", "fp32", False)
    else:
        cfg = ModelConfig.preset("gpt2-124m", vocab_size=args.vocab, context_length=args.seq)
        defaults = ("cuda", "bf16", True)
    args.device = args.device or defaults[0]
    args.precision = args.precision or defaults[1]
    args.compile = defaults[2] if args.compile is None else args.compile
    device = torch.device(args.device)
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)  # CI's CPU path: one thread, robust on a shared machine
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "train_gpu.py: no CUDA GPU is visible to this PyTorch "
            f"({torch.__version__}); run it on a GPU, or pass --tiny to exercise the code on the CPU"
        )
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for fp32 matmuls, both models alike

    # --- the machine's limits ---
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        sheet = datasheet_peak(name) if args.precision == "bf16" else None
        measured = matmul_peak(device, DTYPES[args.precision], 8192)
        memory = f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB"
    else:
        name, sheet, memory = f"CPU ({torch.get_num_threads()} thread(s))", None, "host memory"
        measured = matmul_peak(
            device, DTYPES[args.precision], 256 if args.tiny else 2048, repeats=3, inner=2
        )
    sheet_text = f"{sheet / 1e12:.0f} TFLOP/s" if sheet else "unknown for this device"
    print(f"device: {name}, {memory}; torch {torch.__version__}")
    print(
        f"{args.precision} peak: data sheet (dense) {sheet_text}; measured matmul "
        f"{measured / 1e12:.1f} TFLOP/s ({'8192' if device.type == 'cuda' else 'small'}^3)"
    )

    # --- data: random ids, as a token array for the Trainer and as ready batches for the loops ---
    rng = np.random.default_rng(0)
    n_tokens = max(1 << 20, 4 * args.batch * (args.seq + 1))
    tokens = rng.integers(0, cfg.vocab_size, size=n_tokens, dtype=np.int64).astype(
        np.uint16 if cfg.vocab_size <= 65536 else np.uint32
    )
    batches = []
    for _ in range(4):
        ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1))
        batches.append((ids[:, :-1].contiguous().to(device), ids[:, 1:].contiguous().to(device)))

    with torch.device("meta"):
        flops_per_token = GPT(cfg).flops_per_token(args.seq)
    tokens_per_step = args.batch * args.seq * args.grad_accum
    print(
        f"GPT-2 shape {cfg.d_model}d x {cfg.n_layers}L x {cfg.n_heads}H, vocab {cfg.vocab_size}; batch "
        f"{args.batch} x {args.seq} tokens x {args.grad_accum} micro-batches = {tokens_per_step:,} tokens/step; "
        f"{args.precision}, compile {'on' if args.compile else 'off'}, fused AdamW; "
        f"{flops_per_token / 1e6:.1f} MFLOP/token"
    )

    loops = {
        "HF GPT2LMHeadModel": ("hf", lambda: run_hf(cfg, args, device, batches)),
        "buildlm model": ("model", lambda: run_buildlm_raw(cfg, args, device, batches)),
        "buildlm Trainer": (
            "trainer",
            lambda: run_trainer(cfg, args, device, tokens, sheet or measured),
        ),
    }
    results = {}
    for label, (key, run) in loops.items():
        if key in args.skip:
            continue
        results[label] = run()
        free(device)  # the loop's model, optimizer and compiled graphs are gone: release them
        seconds, warm, _ = results[label]
        what = "warm-up incl. compilation" if args.compile else "warm-up"
        print(
            f"  {label}: {tokens_per_step / seconds:,.0f} tok/s ({what} {warm:.1f} s)", flush=True
        )

    header = [
        "loop",
        "tok/s",
        "ms/step",
        "vs HF",
        "MFU (data sheet)",
        "MFU (measured)",
        "peak mem GiB",
    ]
    rows = []
    hf = results.get("HF GPT2LMHeadModel")
    for label, (seconds, _, peak_mem) in results.items():
        tps = tokens_per_step / seconds
        rows.append(
            [
                label,
                f"{tps:,.0f}",
                f"{seconds * 1e3:.1f}",
                f"{hf[0] / seconds:.2f}x" if hf else "-",
                f"{tps * flops_per_token / sheet:.1%}" if sheet else "-",
                f"{tps * flops_per_token / measured:.1%}",
                f"{peak_mem / 2**30:.1f}" if peak_mem == peak_mem else "-",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, ["-" * w for w in widths], *rows]:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(
        f"\n{args.steps} timed steps after {args.warmup} warm-up steps per loop; vs HF = HF time / "
        "time (> 1: faster than Hugging Face); MFU = tok/s x FLOPs/token / peak"
    )


if __name__ == "__main__":
    main()
