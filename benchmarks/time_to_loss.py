"""Time to quality: the validation bits per byte each training recipe reaches in the same wall time.

What a user of the main job gets is not tokens per second but the model at the end of the
budget. This runs ``buildlm train`` (the real command, its whole run inside the budget) on the
bundled Shakespeare with the same 4,096-token BPE and data split, once per recipe, for the same
``--train.time_budget_s``, in interleaved rounds (a, b, c, a, b, c, ...) so that load from other
processes hits every recipe alike, and prints each recipe's validation bits per byte (min /
median / max over the rounds), its steps and the sample it ends with:

(a) ``nanogpt``: nanoGPT's recipe for a CPU (its README's "baby GPT": 4 layers, 4 heads, width
    128, 64-token blocks in batches of 12, no dropout) with its Shakespeare hyperparameters (lr
    1e-3 down to 1e-4, beta2 0.99, 100 warm-up steps, no biases): the GPT-2 block, AdamW, cosine;
(b) ``old-default``: what ``buildlm train`` ran before issue 24, spelled out: the GPT-2 block
    (learned positions, LayerNorm, GELU, biases), AdamW, cosine, fp32;
(c) ``default``: ``buildlm train`` with no arguments, as the README runs it: the Llama/Qwen3
    block (RoPE, RMSNorm, SwiGLU, QK-norm, no biases, untied head), Muon for the hidden matrices,
    warmup-stable-decay, precision chosen by the machine (`configs/shakespeare-small.yaml`).

The ``default-*`` recipes take one of (c)'s choices back, or try one more on top of it
(``--recipes default ablations`` runs them all; ``--threads 1`` under ``taskset -c 0`` measures
them on one core while the other is busy).

    python benchmarks/time_to_loss.py                      # 300 s per run, 3 rounds
    python benchmarks/time_to_loss.py --budget 120 --rounds 1 --recipes old-default default
    python benchmarks/time_to_loss.py --tiny               # 15 s per run, one round (CI)
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES: dict[str, list[str]] = {
    "nanogpt": [
        "--model.preset", "tiny", "--model.bias", "false", "--model.dropout", "0.0",
        "--train.optimizer", "adamw", "--train.lr_schedule", "cosine", "--train.precision", "fp32",
        "--train.context_length", "64", "--train.batch_size", "12", "--train.lr", "1e-3",
        "--train.min_lr", "1e-4", "--train.beta2", "0.99", "--train.warmup_steps", "100",
    ],
    "old-default": [
        "--model.preset", "tiny", "--train.optimizer", "adamw", "--train.lr_schedule", "cosine",
        "--train.precision", "fp32",
    ],
    "default": [],
}  # fmt: skip

# Each choice's share: the default with one choice taken back (a later flag wins), or one more
# change tried on top of it.
ABLATIONS: dict[str, list[str]] = {
    "default-adamw": ["--train.optimizer", "adamw"],
    "default-cosine": ["--train.lr_schedule", "cosine"],
    "default-learned-pos": ["--model.position", "learned"],
    "default-layernorm": ["--model.norm", "layernorm"],
    "default-gelu": ["--model.mlp", "gelu"],
    "default-relu2": ["--model.mlp", "relu2"],
    "default-swiglu-512": ["--model.d_ff", "512"],  # the gated MLP's automatic width
    "default-no-qk-norm": ["--model.qk_norm", "false"],
    "default-bias": ["--model.bias", "true"],
    "default-tied": ["--model.tie_embeddings", "true"],
    "default-wide": ["--model.d_model", "192"],
    "default-fp32": ["--train.precision", "fp32"],
}  # fmt: skip
RECIPES.update(ABLATIONS)


def cpu_description() -> str:
    """The CPU model and the instruction sets that decide its matmul speed."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    has = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                    ("amx_tile", "AMX")) if flag in flags]  # fmt: skip
    return f"{model}, {os.cpu_count()} logical CPUs, {' '.join(has) or 'no AVX2'}"


def final_figures(run: Path) -> tuple[int, float, float]:
    """(steps, validation loss, validation bits per byte) of a run's last evaluation."""
    with (run / "metrics.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_bpb")]
    last = rows[-1]
    return int(last["step"]), float(last["val_loss"]), float(last["val_bpb"])


def train(recipe: str, budget: float, out_dir: Path, name: str, extra: list[str]) -> dict:
    """One ``buildlm train`` run of ``recipe``; its figures and its closing sample."""
    command = [
        sys.executable, "-m", "buildlm", "train", *RECIPES[recipe], *extra,
        "--train.time_budget_s", str(budget), "--train.out_dir", str(out_dir), "--train.name", name,
        "--train.progress", "false",
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{recipe}: buildlm train failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    steps, loss, bpb = final_figures(out_dir / name)
    closing = re.findall(r"--- sample ---\n(.*?)\n---", done.stdout + done.stderr, flags=re.S)
    return {"steps": steps, "val_loss": loss, "bpb": bpb, "wall": wall, "sample": closing[-1] if closing else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", choices=[*RECIPES, "ablations"], default=["nanogpt", "old-default", "default"],
                        help="recipes to run; 'ablations' stands for every default-* variant")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="15 s per run, one round (CI)")
    parser.add_argument("--threads", type=int, default=None,
                        help="--train.num_threads for every run (e.g. 1 under `taskset -c 0`, for ablations on a shared machine)")  # fmt: skip
    args = parser.parse_args()
    budget, rounds = (15.0, 1) if args.tiny else (args.budget, args.rounds)
    recipes = [name for r in args.recipes for name in (ABLATIONS if r == "ablations" else [r])]
    extra = ["--train.eval_interval", "20", "--train.eval_batches", "2"] if args.tiny else []
    extra += ["--train.num_threads", str(args.threads)] if args.threads else []
    threads = f"{args.threads} thread(s) per run" if args.threads else "torch's default threads"
    print(f"machine: {cpu_description()}; {threads}; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # Prepare the data once (tokenizer, shards), outside every timed run.
        subprocess.run(
            [sys.executable, "-m", "buildlm", "train", "--train.max_steps", "1", "--train.time_budget_s", "null",
             "--train.out_dir", str(out), "--train.name", "warm-up", "--train.progress", "false"],
            check=True, capture_output=True,
        )  # fmt: skip
        results: dict[str, list[dict]] = {r: [] for r in recipes}
        for i in range(rounds):
            for recipe in recipes:
                got = train(recipe, budget, out, f"{recipe}-{i}", extra)
                results[recipe].append(got)
                print(f"round {i + 1} {recipe:22s} steps {got['steps']:5d}  val loss {got['val_loss']:.3f}  "
                      f"bits/byte {got['bpb']:.3f}  wall {got['wall']:.1f}s", flush=True)  # fmt: skip
    print(f"\nload average after: {os.getloadavg()[0]:.2f}; budget {budget:g}s per run, {rounds} round(s)")
    print(f"{'recipe':22s} {'bits/byte min / median / max':>30s} {'steps (median)':>15s}")
    medians = {}
    for recipe, runs in results.items():
        bpbs = sorted(r["bpb"] for r in runs)
        medians[recipe] = statistics.median(bpbs)
        steps = statistics.median(r["steps"] for r in runs)
        print(f"{recipe:22s} {bpbs[0]:>10.3f} / {medians[recipe]:.3f} / {bpbs[-1]:.3f} {steps:>15.0f}")
    if "default" in medians:
        for other in ("nanogpt", "old-default"):
            if other in medians:
                gain = medians[other] - medians["default"]
                print(f"default is {gain:+.3f} bits/byte below {other} (goal: at least 0.150)")
    for recipe in [r for r in medians if r in ABLATIONS and "default" in medians]:
        print(f"{recipe} is {medians[recipe] - medians['default']:+.3f} bits/byte from default")
    for recipe, runs in results.items():
        print(f"\n--- {recipe}: the last run's closing sample ---\n{runs[-1]['sample'][:400]}")


if __name__ == "__main__":
    main()
