"""Loading a Hugging Face checkpoint: buildlm.hub.load_hf vs transformers' from_pretrained.

A GPT-2 124M-shaped model with random weights is built with transformers and saved with
``save_pretrained`` (one fp32 ``model.safetensors``, ~498 MB). Each loader then runs in a fresh
subprocess, so neither inherits the other's memory. In the subprocess the libraries are imported
first (not measured), the peak-RSS mark is reset to the current RSS (Linux: ``clear_refs``),
then the timer starts and the model is loaded; "load s" stops there. A forward pass over 8
tokens follows, so every weight has really been read (a loader that only maps the file into
memory would otherwise look free); "peak" is the growth of the process's peak resident set
(``VmHWM``) over load + forward, and "peak / weights" divides it by the bytes of the
checkpoint's tensors. buildlm must stay within 1.3x: one copy of the weights plus scratch.

Rounds interleave the two loaders; "load s" is the best round, "peak" the largest. The file is
in the page cache for every round. The machine may be shared: trust the same-run ratios more
than the absolute figures.

    python benchmarks/load.py           # GPT-2 124M shape, 3 rounds
    python benchmarks/load.py --tiny    # a 2-layer, 64-wide model, 1 round (CI)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _rss import peak_rss, reset_peak_rss  # benchmarks/_rss.py

LIMIT = 1.3  # buildlm's peak RSS growth / checkpoint bytes, at full size


def load_once(which: str, folder: str) -> dict:
    """Runs in a subprocess: load once, report seconds and peak-RSS growth."""
    import torch

    if which == "hf":
        import transformers.models.gpt2.modeling_gpt2  # noqa: F401  (import cost not measured)
        from transformers import AutoModelForCausalLM

        def load():
            return AutoModelForCausalLM.from_pretrained(folder).eval()
    else:
        from buildlm.hub import load_hf

        def load():
            return load_hf(folder, tokenizer=False)[0]

    idx = torch.zeros(1, 8, dtype=torch.long)
    base = reset_peak_rss()
    t0 = time.perf_counter()
    model = load()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        out = model(idx)
    ready = time.perf_counter() - t0
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return {
        "seconds": seconds,
        "ready": ready,
        "peak": peak_rss() - base,
        "checksum": float(logits.double().sum()),
    }


def build_checkpoint(folder: Path, tiny: bool) -> int:
    """Save a random GPT-2 with transformers; return the bytes of its tensors."""
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    shape = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128) if tiny else {}
    shape.update(bos_token_id=0, eos_token_id=0)  # GPT-2's 50256 is outside a tiny vocabulary
    model = GPT2LMHeadModel(GPT2Config(**shape)).eval()
    model.save_pretrained(folder)
    from buildlm.hub.safetensors_io import SafetensorsReader

    reader = SafetensorsReader(folder / "model.safetensors")
    total = 0
    for name in reader.names():
        n = reader.dtype(name).itemsize
        for d in reader.shape(name):
            n *= d
        total += n
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model, one round (seconds)")
    parser.add_argument("--_load", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._load:
        print(json.dumps(load_once(*args._load)))
        return

    rounds = 1 if args.tiny else 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2"
        weight_bytes = build_checkpoint(folder, args.tiny)
        results: dict[str, list[dict]] = {"hf": [], "buildlm": []}
        for _ in range(rounds):
            for which in results:
                out = subprocess.run(
                    [sys.executable, __file__, "--_load", which, str(folder)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[which].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {w: min(r["seconds"] for r in rs) for w, rs in results.items()}
    ready = {w: min(r["ready"] for r in rs) for w, rs in results.items()}
    peak = {w: max(r["peak"] for r in rs) for w, rs in results.items()}
    same = abs(results["hf"][0]["checksum"] - results["buildlm"][0]["checksum"]) < 1e-3 * max(
        1.0, abs(results["hf"][0]["checksum"])
    )
    shape = "tiny GPT-2 (2 layers, d=64)" if args.tiny else "GPT-2 124M"
    print(
        f"checkpoint: {shape}, fp32 model.safetensors, {weight_bytes / 2**20:.1f} MiB of tensors; "
        f"{rounds} round(s); logits after load {'identical' if same else 'DIFFER'}"
    )
    header = [
        "loader", "load s", "load+fwd s", "peak MiB", "peak / weights", "time vs HF", "peak vs HF"
    ]  # fmt: skip
    rows = [
        [
            "transformers from_pretrained" if which == "hf" else "buildlm load_hf",
            f"{best[which]:.3f}",
            f"{ready[which]:.3f}",
            f"{peak[which] / 2**20:.1f}",
            f"{peak[which] / weight_bytes:.2f}x",
            f"{best['hf'] / best[which]:.2f} / {ready['hf'] / ready[which]:.2f}",
            f"{peak[which] / peak['hf']:.2f}",
        ]
        for which in ("hf", "buildlm")
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        "time vs HF = HF seconds / loader seconds for load / load+fwd (> 1: faster); "
        "peak vs HF = loader peak / HF peak (< 1: less memory)"
    )
    ratio = peak["buildlm"] / weight_bytes
    if not args.tiny:
        verdict = "ok" if ratio <= LIMIT else "EXCEEDED"
        print(f"buildlm peak / weights = {ratio:.2f}x (limit {LIMIT}x): {verdict}")
        if ratio > LIMIT or not same:
            raise SystemExit(1)
    elif not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
