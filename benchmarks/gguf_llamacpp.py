"""Does llama.cpp itself run buildlm's GGUF export and compute what buildlm computes?

For a GPT-2-, Llama-, Qwen2-, Qwen3-, Mixtral- and Qwen3-MoE-style random model, the families
of `buildlm.hub.gguf_families` (Llama 3 RoPE scaling, Gemma 1/2/3, OLMo 2, Qwen2-MoE, windowed
Mistral), and a Llama 2 and a Gemma with SentencePiece-style tokenizers (`gguf_spm`), each
dtype: export with
``save_gguf``, load the file in llama.cpp (its Python binding, ``llama_cpp``, which builds
llama.cpp from source when pip installs it), and compare with buildlm

1. the tokenizer: llama.cpp's ids for sample texts (its own pre-tokenizer, found by the name
   ``tokenizer.ggml.pre``) against buildlm's;
2. the logits of a prompt, every position (llama.cpp with a float32 KV cache), against buildlm's
   model read back from the same file (so both start from the same rounded weights);
3. greedy decoding: ``--new-tokens`` tokens, each the argmax, llama.cpp's against buildlm's.

    pip install llama-cpp-python            # compiles llama.cpp (see RESULTS.md for the time)
    python benchmarks/gguf_llamacpp.py      # d_model 256, 4 layers
    python benchmarks/gguf_llamacpp.py --tiny
    python benchmarks/gguf_llamacpp.py --tiny --only gemma2 gemma3 --dtypes f32

Exits non-zero when a check fails; prints one row per model and dtype.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from buildlm.hub import load_gguf, save_gguf
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import SentencePieceBPE, Tokenizer

LLAMA_LIKE = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, norm_eps=1e-5)
GEMMA = dict(**LLAMA_LIKE | {"mlp": "geglu"}, norm_offset=1.0, embed_scale=True)
STYLES = {  # name: (ModelConfig overrides, tokenizer pattern -> llama.cpp pre-tokenizer)
    "gpt2": (dict(), "gpt2"),
    "llama": (dict(**LLAMA_LIKE, n_kv_heads=2, tie_embeddings=False, rope_theta=5e5), "cl100k"),
    "qwen2": (dict(**LLAMA_LIKE, n_kv_heads=2, qkv_bias=True), "gpt2"),
    "qwen3": (dict(**LLAMA_LIKE, n_kv_heads=1, qk_norm=True, head_dim=32), "o200k"),
    "mixtral": (dict(**LLAMA_LIKE, n_kv_heads=2, n_experts=4, moe_d_ff=128, d_ff=128), "gpt2"),
    "qwen3moe": (dict(**LLAMA_LIKE, n_kv_heads=2, qk_norm=True, n_experts=8, n_active_experts=3,
                      moe_d_ff=64), "cl100k"),
    # Llama 3 RoPE scaling with a short original context, so that the head's frequencies fall in
    # all three bands (kept, blended, slowed; with --tiny's head_dim 16, one, one and six of its
    # eight): llama.cpp reads them from the rope_freqs tensor.
    "llama3": (dict(**LLAMA_LIKE, n_kv_heads=2, rope_theta=5e5, rope_scaling=dict(
        type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_context_length=40)), "cl100k"),
    "gemma": (dict(**GEMMA, n_kv_heads=1), "gpt2"),
    # Local layers see 8 positions (the prompt is longer), with Gemma 2's and Gemma 3's periods;
    # caps small enough to change these random models' scores and logits (Gemma 2's are 50, 30);
    # query_pre_attn_scalar None is head_dim, the scale llama.cpp uses at these sizes.
    "gemma2": (dict(**GEMMA, norm_placement="sandwich", n_kv_heads=2, query_pre_attn_scalar=None,
                    attn_logit_softcap=1.0, final_logit_softcap=5.0, sliding_window=8,
                    layer_types=lambda n: ["full_attention" if i % 2 else "sliding_attention"
                                           for i in range(n)]), "gpt2"),
    "gemma3": (dict(**GEMMA, norm_placement="sandwich", qk_norm=True, n_kv_heads=2, head_dim=32,
                    query_pre_attn_scalar=32, sliding_window=8, rope_theta=1e6,
                    final_logit_softcap=5.0,
                    rope_local_theta=2e4, layer_types=lambda n: [
                        "full_attention" if i % 3 == 2 else "sliding_attention" for i in range(n)
                    ]), "o200k"),
    "olmo2": (dict(**LLAMA_LIKE, norm_placement="branch_post", qk_norm=True, qk_norm_scope="all",
                   n_kv_heads=2, tie_embeddings=False), "gpt2"),
    "qwen2moe": (dict(**LLAMA_LIKE, n_kv_heads=2, qkv_bias=True, n_experts=6, n_active_experts=2,
                      moe_d_ff=64, router_renormalize=False, n_shared_experts=1,
                      shared_expert_d_ff=96, shared_expert_gate=True, tie_embeddings=False),
                 "gpt2"),
    "mistral": (dict(**LLAMA_LIKE, n_kv_heads=2, sliding_window=256, tie_embeddings=False),
                "gpt2"),  # a window as long as the context: what llama.cpp computes
    # SentencePiece-style tokenizers (tokenizer.ggml.model "llama", gguf_spm), laid out by
    # tests/spm_files.py as transformers writes Llama 2's and Gemma's tokenizer.json files.
    "llama2": (dict(**LLAMA_LIKE, n_kv_heads=2, tie_embeddings=False), "spm:llama"),
    "gemma-sp": (dict(**GEMMA, n_kv_heads=1), "spm:gemma"),
}
# Largest |logit difference| accepted: f32 is float32 arithmetic in another order; llama.cpp
# multiplies f16/bf16 weights by activations rounded to f16/bf16 and q8_0 weights by activations
# quantized to 8 bits per block of 32, which buildlm (float32 activations) does not.
# Tolerances are relative: max |logit difference| / max |logit|. Greedy tokens must match where
# llama.cpp keeps activations in float32 or float16 (f32, f16 files); with bf16 and q8_0 its
# rounded activations may flip a near tie, so there the row says where they part, if they do.
# The "format" column is the file's own rounding (buildlm on the original weights against buildlm
# on the file's): llama.cpp's difference is of that order, as it rounds activations the same way.
TOLERANCE = {"f32": 2e-5, "f16": 5e-3, "bf16": 5e-2, "q8_0": 1e-1}
GREEDY_MUST_MATCH = ("f32", "f16")
# ggml's CPU GELU reads a table of float16 inputs and outputs: on GPT-2's MLP that alone moves
# the f32 logits by ~1e-3 (rounding buildlm's GELU input and output to float16 the same way takes
# the measured max difference from 1.3e-3 to 2.8e-4 on the --tiny model).
GELU_TABLE = 2e-3
# A mixture of experts sends each token to its top-k experts: llama.cpp's rounded activations
# can pick another expert for a token whose router scores nearly tie, and that token's logits
# then differ by far more than rounding (the file's own rounding does the same: "format"). So
# for MoE models f16 gets twice the dense tolerance and bf16/q8_0 rows are reported, not judged.
MOE_JUDGED = ("f32", "f16")
TEXTS = ["Hello world! It's 2026.", "  the quick brown fox\n\njumps 12345 times", "héllo ☃ <|endoftext|>"]
SPM_TEXTS = [*TEXTS[:2], "héllo ☃ 🙂 日本語 <s> </s>x <eos> <bos>  end "]
ROOT = Path(__file__).resolve().parent.parent


def make_tokenizer(pattern: str, corpus: str, folder: Path) -> Tokenizer | SentencePieceBPE:
    """A byte-level BPE trained on ``corpus`` with ``pattern``, or for ``"spm:STYLE"`` a
    SentencePiece-style tokenizer.json built by Hugging Face ``tokenizers`` (tests/spm_files)."""
    if not pattern.startswith("spm:"):
        return Tokenizer.train(corpus, 512, pattern=pattern)
    sys.path.insert(0, str(ROOT / "tests"))
    import spm_files

    style = pattern.removeprefix("spm:")
    return Tokenizer.load(spm_files.build(style, folder / f"{style}.json", "words"))


def random_model(overrides: dict, d_model: int, n_layers: int, vocab: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)  # (a callable override is a function of the number of layers)
    overrides = {k: v(n_layers) if callable(v) else v for k, v in overrides.items()}
    cfg = ModelConfig(
        vocab_size=vocab, context_length=256, d_model=d_model, n_layers=n_layers, n_heads=4,
        init_std=0.1, **overrides,
    )  # fmt: skip
    model = GPT(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # norms off ones, biases off zeros
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def llama_cpp_run(path: Path, prompt: list[int], new_tokens: int):
    """llama.cpp's logits for every prompt position and its greedy continuation."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(path), n_ctx=256, n_batch=256, logits_all=True, verbose=False,
        n_threads=1, type_k=0, type_v=0,  # GGML_TYPE_F32: keys and values cached unrounded
    )  # fmt: skip
    llm.eval(prompt)
    logits = np.array(llm.scores[: len(prompt)], dtype=np.float32)
    greedy = []
    for _ in range(new_tokens):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        greedy.append(nxt)
        llm.eval([nxt])
    return llm, logits, greedy


@torch.no_grad()
def buildlm_run(model: GPT, prompt: list[int], new_tokens: int):
    idx = torch.tensor([prompt])
    logits = model(idx)[0].numpy()
    greedy = []
    for _ in range(new_tokens):
        nxt = int(model(idx)[0, -1].argmax())
        greedy.append(nxt)
        idx = torch.cat([idx, torch.tensor([[nxt]])], dim=1)
    return logits, greedy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a small model (seconds)")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--only", nargs="+", choices=STYLES, help="these model styles only")
    parser.add_argument("--dtypes", nargs="+", choices=TOLERANCE, default=list(TOLERANCE))
    args = parser.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama.cpp's Python binding is not installed (pip install llama-cpp-python compiles it: "
              "26m49s on 2 shared cores here, see RESULTS.md); nothing to compare")  # fmt: skip
        return 0
    d_model, n_layers = (64, 2) if args.tiny else (256, 4)
    corpus = (ROOT / "README.md").read_text(encoding="utf-8")
    failures = 0
    print(
        f"{'model':8} {'dtype':5} {'ids':5} {'max|logit|':>10} {'max|dlogit|':>11} {'relative':>9} "
        f"{'format':>8} {'greedy':13} {'llama.cpp s':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for style, (overrides, pattern) in STYLES.items():
            if args.only and style not in args.only:
                continue
            tokenizer = make_tokenizer(pattern, corpus, Path(tmp))
            texts = SPM_TEXTS if pattern.startswith("spm:") else TEXTS
            prompt = tokenizer.encode(texts[0] + texts[1])
            for dtype in args.dtypes:
                model = random_model(overrides, d_model, n_layers, tokenizer.vocab_size + 3)
                path = Path(tmp) / f"{style}-{dtype}.gguf"
                save_gguf(model, tokenizer, path, dtype=dtype)
                reference, _ = load_gguf(path)  # the weights exactly as the file holds them
                start = time.perf_counter()
                llm, logits, greedy = llama_cpp_run(path, prompt, args.new_tokens)
                seconds = time.perf_counter() - start
                ours_logits, ours_greedy = buildlm_run(reference, prompt, args.new_tokens)
                same_ids = all(
                    llm.tokenize(t.encode(), add_bos=False, special=True)
                    == tokenizer.encode(t, allowed_special="all")
                    for t in texts
                )
                diff = float(np.abs(logits - ours_logits).max())
                scale = float(np.abs(ours_logits).max())
                gelu = style == "gpt2" or style.startswith("gemma")
                tolerance = TOLERANCE[dtype] + (GELU_TABLE if gelu else 0.0)
                pairs = zip(greedy, ours_greedy, strict=True)
                parted = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
                original, _ = buildlm_run(model, prompt, 0)
                own = float(np.abs(original - ours_logits).max()) / scale
                greedy_ok = parted is None or dtype not in GREEDY_MUST_MATCH
                if model.config.n_experts:
                    tolerance = 2 * tolerance if dtype in MOE_JUDGED else float("inf")
                ok = same_ids and diff / scale <= tolerance and greedy_ok
                failures += not ok
                print(
                    f"{style:8} {dtype:5} {'same' if same_ids else 'DIFFER':5} {scale:10.2f} "
                    f"{diff:11.2e} {diff / scale:9.1e} {own:8.1e} "
                    f"{'same' if parted is None else f'parts at {parted}':13} {seconds:11.2f}"
                    + ("" if ok else "   <- FAILED")
                    + ("   (reported only)" if tolerance == float("inf") else "")
                )
                del llm
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
