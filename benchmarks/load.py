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
    python benchmarks/load.py --family qwen3_moe   # also mixtral, mistral, gemma3_text, olmo2

The other families are built at about GPT-2 124M's size too (their shapes in ``FAMILIES``), so
the mixture-of-experts loaders (experts stacked into one tensor per layer) and the block details
of Gemma 3 and OLMo 2 are held to the same 1.3x.
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

# family -> (transformers config class, full-size shape, tiny shape); GPT-2 uses its defaults.
_LLAMA_LIKE = dict(vocab_size=32000, max_position_embeddings=1024, tie_word_embeddings=False)
FAMILIES: dict[str, tuple[str, dict, dict]] = {
    "gpt2": ("GPT2Config", {}, dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128)),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        dict(**_LLAMA_LIKE, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
             num_key_value_heads=2, head_dim=64, intermediate_size=2048, moe_intermediate_size=512,
             num_experts=16, num_experts_per_tok=2),
        dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, intermediate_size=128, moe_intermediate_size=64,
             num_experts=4, num_experts_per_tok=2),
    ),
    "mixtral": (
        "MixtralConfig",
        dict(**_LLAMA_LIKE, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
             num_key_value_heads=2, intermediate_size=1024, num_local_experts=8, sliding_window=None),
        dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=64, num_local_experts=4, sliding_window=None),
    ),
    "mistral": (
        "MistralConfig",
        dict(**_LLAMA_LIKE, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
             num_key_value_heads=4, intermediate_size=2048, sliding_window=256),
        dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=128, sliding_window=16),
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        dict(vocab_size=32000, hidden_size=640, num_hidden_layers=12, num_attention_heads=4,
             num_key_value_heads=1, head_dim=256, intermediate_size=2048, sliding_window=512),
        dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=1, head_dim=16, intermediate_size=128, sliding_window=16),
    ),
    "olmo2": (
        "Olmo2Config",
        dict(**_LLAMA_LIKE, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
             num_key_value_heads=12, intermediate_size=2048),
        dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, intermediate_size=128),
    ),
}  # fmt: skip


def load_once(which: str, folder: str) -> dict:
    """Runs in a subprocess: load once, report seconds and peak-RSS growth."""
    import torch

    if which == "hf":
        import importlib

        from transformers import AutoConfig, AutoModelForCausalLM

        # the family's modeling code imported before the clock starts (import cost not measured)
        family = {"gemma3_text": "gemma3"}.get(AutoConfig.from_pretrained(folder).model_type)
        family = family or AutoConfig.from_pretrained(folder).model_type
        importlib.import_module(f"transformers.models.{family}.modeling_{family}")

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


def build_checkpoint(folder: Path, tiny: bool, family: str = "gpt2") -> int:
    """Save a random model of ``family`` with transformers; return the bytes of its tensors."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    config_class, full, small = FAMILIES[family]
    shape = dict(small if tiny else full)
    shape.update(bos_token_id=0, eos_token_id=0, pad_token_id=0)  # inside a tiny vocabulary
    config = getattr(transformers, config_class)(**shape)
    model = AutoModelForCausalLM.from_config(config).eval()
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
    parser.add_argument("--family", default="gpt2", choices=sorted(FAMILIES), help="the model family")
    parser.add_argument("--_load", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._load:
        print(json.dumps(load_once(*args._load)))
        return

    rounds = 1 if args.tiny else 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / args.family
        weight_bytes = build_checkpoint(folder, args.tiny, args.family)
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
    shape = f"{args.family}, " + ("tiny (2 layers, d=64)" if args.tiny else "full size (FAMILIES)")
    if args.family == "gpt2":
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
