"""Mixture-of-experts decoding at batch 1: does a step read only the active experts?

A decode step at batch 1 is bound by the bytes of weights it reads. A mixture-of-experts layer
holds ``n_experts`` MLPs but sends each token to ``k`` of them, so if the engine skips the
experts nobody chose, a step reads the attention, the router and k experts: it should decode
about as fast as a dense model with the same *active* parameters, and much faster than a dense
model with the same *total* parameters. This script measures all three with buildlm's `Engine`
(the dense models are the same network with one SwiGLU MLP of k * moe_d_ff or n_experts *
moe_d_ff hidden units), and the same mixture-of-experts weights in Hugging Face's
``Qwen3MoeForCausalLM.generate`` as the peer, greedy, same prompt, in the same run. It prints the
machine's matrix-vector bandwidth and the tokens/s it allows for the active bytes per token.

    python benchmarks/moe_decode.py            # 16 experts, top-2, d_model 512, 6 layers
    python benchmarks/moe_decode.py --tiny     # seconds (CI)
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from buildlm.hub import load_hf
from buildlm.infer import Engine
from buildlm.model import GPT
from generate import matvec_bandwidths  # noqa: E402  (benchmarks/ is the script's folder)


def active_bytes(model: GPT) -> int:
    """Weight bytes one batch-1 decode step reads: everything but the unchosen experts."""
    cfg = model.config
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if not cfg.n_experts:
        return total
    expert = 3 * cfg.d_model * cfg.moe_d_ff * next(model.parameters()).element_size()  # SwiGLU
    moe_layers = sum(cfg.is_moe_layer(i) for i in range(cfg.n_layers))
    return total - moe_layers * (cfg.n_experts - cfg.n_active_experts) * expert


def best_tok_s(run, new_tokens: int, repeats: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return new_tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a toy model, seconds (CI)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, layers, experts, k, width = (64, 2, 8, 2, 64) if args.tiny else (512, 6, 16, 2, 512)
    new_tokens = 8 if args.tiny else args.new_tokens
    hf_config = Qwen3MoeConfig(
        vocab_size=2048 if args.tiny else 8192, hidden_size=d, num_hidden_layers=layers,
        num_attention_heads=8, num_key_value_heads=2, head_dim=d // 8, intermediate_size=4 * d,
        moe_intermediate_size=width, num_experts=experts, num_experts_per_tok=k,
        norm_topk_prob=True, decoder_sparse_step=1, max_position_embeddings=512,
        tie_word_embeddings=False,
    )  # fmt: skip
    hf = Qwen3MoeForCausalLM(hf_config).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        moe, _ = load_hf(folder, tokenizer=False)
    base = dataclasses.replace(moe.config, n_experts=0, moe_d_ff=None, shared_expert_d_ff=None)
    models = {
        "buildlm MoE": moe,
        "dense, equal active": GPT(dataclasses.replace(base, d_ff=k * width)).eval(),
        "dense, equal total": GPT(dataclasses.replace(base, d_ff=experts * width)).eval(),
    }
    prompt = torch.randint(0, hf_config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))

    bandwidth = max(matvec_bandwidths(1024 if args.tiny else 4096, torch.float32).values())
    print(f"threads={args.threads}  torch {torch.__version__}  MoE: d_model {d}, {layers} layers, "
          f"{experts} experts of {width} (top-{k}); prompt 16 + {new_tokens} new tokens, greedy, batch 1")
    print(f"matrix-vector bandwidth (best layout): {bandwidth / 1e9:.1f} GB/s")

    results: dict[str, float] = {}
    with torch.inference_mode():
        hf_ids = hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        results["Hugging Face MoE"] = best_tok_s(
            lambda: hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False),
            new_tokens, args.repeats,
        )  # fmt: skip
        engines = {name: Engine(model) for name, model in models.items()}
        ours = engines["buildlm MoE"].generate(
            [prompt[0].tolist()], max_new_tokens=new_tokens, temperature=0, stop_token_ids=()
        )[0]
        same = ours.token_ids == hf_ids[0, 16:].tolist()
        for name, engine in engines.items():
            results[name] = best_tok_s(
                lambda e=engine: e.generate([prompt[0].tolist()], max_new_tokens=new_tokens,
                                            temperature=0, stop_token_ids=()),
                new_tokens, args.repeats,
            )  # fmt: skip
    print(f"greedy tokens of the MoE equal to Hugging Face's: {same}")
    print(f"{'model':22s} {'params M':>9s} {'read/token MB':>14s} {'limit tok/s':>12s} {'tok/s':>8s} {'of limit':>9s}")
    for name, tok_s in results.items():
        model = moe if name == "Hugging Face MoE" else models[name]
        total = sum(p.numel() for p in model.parameters()) / 1e6
        read = active_bytes(model)
        limit = bandwidth / read
        print(f"{name:22s} {total:9.1f} {read / 1e6:14.1f} {limit:12.1f} {tok_s:8.1f} {tok_s / limit:8.0%}")
    moe_tok_s = results["buildlm MoE"]
    print(f"ratios: buildlm MoE / Hugging Face MoE {moe_tok_s / results['Hugging Face MoE']:.2f}x; "
          f"MoE / dense of equal active {moe_tok_s / results['dense, equal active']:.2f}x; "
          f"MoE / dense of equal total {moe_tok_s / results['dense, equal total']:.2f}x")


if __name__ == "__main__":
    main()
