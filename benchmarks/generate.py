"""Decoding speed: buildlm's Engine vs Hugging Face ``generate``, same weights, same dtype.

A GPT-2 124M-shaped ``GPT2LMHeadModel`` with random weights is saved with ``save_pretrained``
and loaded into buildlm with ``buildlm.hub.load_hf``, so both run the very same weights. Each
generates ``--new-tokens`` tokens greedily after a ``--prompt-len``-token prompt (no early stop),
for batch sizes 1, 8 and 32, in fp32 and bf16. Runs are interleaved (HF, buildlm, HF, ...) and
each figure is the best of ``--repeats``. The batch-1 ids of the two are checked to be equal.

The limit: decoding one token reads every weight once (the LM head reads the whole embedding
table), so at batch 1 it cannot beat ``bandwidth / bytes of weights``. The bandwidth is that of a
large matrix-vector product in the same dtype, measured in this run before every round of runs
and kept at its best (the machine's speed drifts; the engines keep their best time too). On a
CPU without bf16 instructions the bf16 product is limited by converting, not by memory.
``--compile`` also times ``Engine(compile=True)`` on the CPU.

On a GPU (``--device cuda``) three engines run: eager (``static_decode=False``), the default
(fixed-shape steps replayed as a CUDA graph) and ``compile=True`` (compiled, then replayed as a
CUDA graph); the bandwidth is the best of a large matrix-vector product and a large
device-to-device copy (bytes read plus written), i.e. what the HBM delivers in practice.

    python benchmarks/generate.py           # GPT-2 124M, 128 new tokens, 2 threads
    python benchmarks/generate.py --device cuda --repeats 3   # on a GPU
    python benchmarks/generate.py --tiny    # tiny shape, seconds (CI)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from buildlm.hub import load_hf
from buildlm.infer.engine import Engine
from buildlm.infer.weight_layout import huge_page_bytes
from buildlm.model import GPT

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_bandwidths(n: int, dtype: torch.dtype, repeats: int = 20) -> dict[str, float]:
    """Bytes/s on the GPU of an (n x n) matrix times a vector, and of a device-to-device copy."""
    device = torch.device("cuda")
    weight = torch.randn(n, n, device=device).to(dtype)
    x = torch.randn(1, n, device=device).to(dtype)
    src = torch.randn(n * n // 2, device=device).to(dtype)
    dst = torch.empty_like(src)
    runs = {
        "matvec (out, in)": (lambda: F.linear(x, weight), weight.numel() * weight.element_size()),
        "matvec (in, out)": (lambda: x @ weight, weight.numel() * weight.element_size()),
        "copy (read + write)": (lambda: dst.copy_(src), 2 * src.numel() * src.element_size()),
    }
    found = {}
    for name, (run, nbytes) in runs.items():
        for _ in range(3):
            run()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(repeats):
            start.record()
            run()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        found[name] = nbytes / best
    return found


def matvec_bandwidths(n: int, dtype: torch.dtype, repeats: int = 5) -> dict[str, float]:
    """Bytes/s of an (n x n) matrix times a vector, for each layout and page size (best of runs).

    Reading the matrix dominates. ``"(out, in), ordinary pages"`` is what any PyTorch program
    gets from ``F.linear``; the best of all four is the strict limit, so the engine's own
    layout and huge-page tricks cannot raise its score.
    """
    weight = torch.randn(n, n).to(dtype)
    x = torch.randn(1, n).to(dtype)
    nbytes = weight.numel() * weight.element_size()
    found = {}
    for pages in ("ordinary", "huge"):
        for layout in ("(out, in)", "(in, out)"):
            memory = huge_page_bytes(nbytes) if pages == "huge" else torch.empty(nbytes, dtype=torch.uint8)
            w = memory.view(dtype).view(n, n)
            w = w.t() if layout == "(in, out)" else w
            w.copy_(weight)
            F.linear(x, w)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                F.linear(x, w)
                best = min(best, time.perf_counter() - t0)
            found[f"{layout}, {pages} pages"] = nbytes / best
    return found


def bytes_per_token(model: GPT) -> int:
    """Weight bytes one decode step reads: every parameter but the position table (one row)."""
    skip = {id(model.pos_emb.weight)} if getattr(model, "pos_emb", None) is not None else set()
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def engines(model: GPT, device: torch.device, compile: bool = False) -> dict[str, Engine]:
    """The buildlm variants to time: the default engine on the CPU, and a compiled one when
    ``compile``; three on a GPU. A compiled engine compiles during its first run of each batch
    size; each figure is the best of ``--repeats`` runs, so with 2 or more that is left out."""
    if device.type == "cpu":
        found = {"buildlm": Engine(model)}
        if compile:
            found["compile"] = Engine(model, compile=True)
        return found
    return {
        "eager": Engine(model, static_decode=False),
        "graph": Engine(model),
        "compile+graph": Engine(model, compile=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shape, a few seconds (CI)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--compile", action="store_true", help="CPU: also time Engine(compile=True)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)
    bw_n = 8192
    if args.tiny:
        shape = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=128)
        args.new_tokens, args.batches, args.repeats, bw_n = 8, "1,2", 1, 1024
    hf_cfg = GPT2Config(
        **shape, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=shape["vocab_size"] - 1, eos_token_id=shape["vocab_size"] - 1,
    )  # fmt: skip
    hf = GPT2LMHeadModel._from_config(hf_cfg, attn_implementation="sdpa").eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours, _ = load_hf(folder)
    ours.eval()
    hf.to(device)
    ours.to(device)
    batches = [int(b) for b in args.batches.split(",")]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"threads={args.threads}"
    print(
        f"{where}  torch {torch.__version__}  GPT-2 {shape['n_embd']}d x {shape['n_layer']}L, vocab "
        f"{shape['vocab_size']}; prompt {args.prompt_len} tokens + {args.new_tokens} new, greedy"
    )
    rows = []
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        hf.to(dtype)
        ours.to(dtype)
        plain_name = "matvec (out, in)" if device.type == "cuda" else "(out, in), ordinary pages"
        # The machine's speed drifts (other tenants): the bandwidth is measured again before
        # every round of runs and each kind keeps its best, as each engine keeps its best time.
        bandwidths: dict[str, float] = {}
        ours_engines = engines(ours, device, args.compile)
        for batch in batches:
            ids = torch.randint(0, shape["vocab_size"] - 1, (batch, args.prompt_len), device=device)
            best = dict.fromkeys(["HF", *ours_engines], float("inf"))
            decode_rate = dict.fromkeys(ours_engines, 0.0)
            outs = {}
            for _ in range(args.repeats):
                if device.type == "cuda":
                    measured = gpu_bandwidths(16384 if not args.tiny else 1024, dtype)
                else:
                    measured = matvec_bandwidths(bw_n, dtype)
                for variant, bandwidth in measured.items():
                    bandwidths[variant] = max(bandwidths.get(variant, 0.0), bandwidth)
                t, outs["HF"] = timed(
                    lambda ids=ids: hf.generate(
                        ids, attention_mask=torch.ones_like(ids), do_sample=False,
                        max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                        pad_token_id=0,
                    ), device,
                )  # fmt: skip
                best["HF"] = min(best["HF"], t)
                for label, engine in ours_engines.items():
                    t, outs[label] = timed(
                        lambda ids=ids, engine=engine: engine.generate(
                            ids.tolist(), max_new_tokens=args.new_tokens, temperature=0,
                            stop_token_ids=(),
                        ), device,
                    )  # fmt: skip
                    best[label] = min(best[label], t)
                    decode_rate[label] = max(decode_rate[label], engine.stats.decode_tokens_per_s)
            how = max(bandwidths, key=bandwidths.get)
            weight_bytes = bytes_per_token(ours)
            limit = bandwidths[how] / weight_bytes
            plain_limit = bandwidths[plain_name] / weight_bytes
            if batch == 1:
                print(f"{name}: {weight_bytes / 1e6:.0f} MB of weights per token; bandwidth by kind:")
                for variant, bandwidth in bandwidths.items():
                    rate = bandwidth / weight_bytes
                    print(f"  {variant:<28}{bandwidth / 1e9:7.1f} GB/s -> {rate:7.1f} tok/s")
                print(f"  limit: {limit:.1f} tok/s (best, {how}); plain F.linear: {plain_limit:.1f} tok/s")
                hf_ids = outs["HF"][0, args.prompt_len :].tolist()
                same = {label: outs[label][0].token_ids == hf_ids for label in ours_engines}
                print(f"  {name} batch-1 greedy ids identical to Hugging Face: {same}")
            n = batch * args.new_tokens
            for label in ["HF", *ours_engines]:
                rate = n / best[label]
                cells = [f"{name:<6}{batch:>6}  {label:<14}{rate:10.1f}"]
                if label != "HF":
                    cells.append(f"{best['HF'] / best[label]:7.2f}x")
                    cells.append(f"{decode_rate[label]:13.1f}")
                else:
                    cells.append(f"{'':>8}{'':>13}")
                if batch == 1:
                    cells.append(f"{rate / limit:9.0%}{rate / plain_limit:9.0%}")
                    if label != "HF":
                        cells.append(f"{decode_rate[label] / limit:13.0%}")
                rows.append("".join(cells))
    print(
        f"\n{'dtype':<6}{'batch':>6}  {'engine':<14}{'tok/s':>10}{'vs HF':>8}{'decode tok/s':>13}"
        f"{'of limit':>9}{'of plain':>9}{'decode/limit':>13}"
    )
    print("\n".join(rows))
    print(
        "\nvs HF = tok/s / HF tok/s (same run); 'of limit' = batch-1 tok/s over the limit of the "
        "fastest bandwidth measured, 'of plain' over that of a plain F.linear; tok/s counts new "
        "tokens over the whole generate call (prefill and Python included); 'decode tok/s' counts "
        "the decode steps alone (Engine.stats)"
    )


if __name__ == "__main__":
    main()
