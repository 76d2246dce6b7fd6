"""GGUF export and import: buildlm -> GGUF -> buildlm gives the same logits (exactly in f32; in
f16/bf16/q8_0 exactly the logits of the weights rounded as the format rounds them), llama.cpp's
own ``gguf`` reader sees the metadata and tensors llama.cpp expects, the tokenizer comes back
with the same ids, and ``buildlm convert`` refuses what it must.

That llama.cpp itself runs the file and agrees is checked by `test_llamacpp_agrees` (skipped,
saying why, when llama.cpp's Python binding is not installed) and benchmarks/gguf_llamacpp.py.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from buildlm.checkpoint_format import load_checkpoint
from buildlm.cli import main as cli_main
from buildlm.hub import load_gguf, save_gguf
from buildlm.hub.convert import main as convert
from buildlm.hub.gguf_tensors import permute_rope
from buildlm.hub.gguf_tokenizer import tokenizer_fields, tokenizer_from_fields
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer
from buildlm.train.checkpoint import save_checkpoint

LLAMA_LIKE = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, norm_eps=1e-6)
# Odd sizes: 301 rows for a 300-id tokenizer (one padding row), d_ff not a multiple of 32 (so
# q8_0 falls back to f16 for the down projection), head_dim 12 or 16, grouped-query attention.
STYLES = {
    "gpt2": ("gpt2", dict(d_ff=80)),
    "gpt2-untied": ("gpt2", dict(tie_embeddings=False)),
    "llama": ("llama", dict(**LLAMA_LIKE, n_kv_heads=2, tie_embeddings=False, rope_theta=5e4)),
    "llama-bias": ("llama", dict(**LLAMA_LIKE | {"bias": True}, n_kv_heads=1)),
    "qwen2": ("qwen2", dict(**LLAMA_LIKE, n_kv_heads=2, qkv_bias=True)),
    "qwen3": ("qwen3", dict(**LLAMA_LIKE, n_kv_heads=2, qk_norm=True, head_dim=16, d_ff=72)),
    "mixtral": ("mixtral", dict(**LLAMA_LIKE, n_kv_heads=2, n_experts=4, moe_d_ff=40, d_ff=40)),
    "qwen3_moe": ("qwen3_moe", dict(**LLAMA_LIKE, qk_norm=True, n_experts=5, n_active_experts=3,
                                    moe_d_ff=32, tie_embeddings=False)),
}
TEXTS = ["Hello world!", "the quick brown fox, 12345 times.\n\n  It's <|endoftext|> done", "héllo ☃"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    corpus = "the quick brown fox jumps over the lazy dog. Hello world! It's 2026. " * 20
    return Tokenizer.train(corpus, 300)  # 256 bytes + 43 merges + <|endoftext|>


def _model(overrides: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    base = dict(vocab_size=301, context_length=64, d_model=48, n_layers=2, n_heads=4)
    model = GPT(ModelConfig(**{**base, **overrides})).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # norms off ones, biases off zeros
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _idx(vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))


def _q8_0(w: torch.Tensor) -> torch.Tensor:
    """q8_0 written out independently of gguf: blocks of 32 along a row, scale max|x|/127 kept
    in float16, values x / scale rounded half away from zero (C's roundf, as ggml) in int8."""
    blocks = w.reshape(-1, 32)
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    scaled = blocks * torch.where(d == 0, 0, 1 / d)
    q = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)
    return (d.half().float() * q).reshape(w.shape)


def _rounded(model: GPT, dtype: str) -> GPT:
    """``model`` with each matrix rounded as a ``dtype`` GGUF stores it (vectors stay f32)."""
    out = GPT(model.config).eval()
    state = {}
    for name, w in model.state_dict().items():
        if w.dim() >= 2 and dtype in ("f16", "bf16"):
            w = w.to(torch.float16 if dtype == "f16" else torch.bfloat16).float()
        elif w.dim() >= 2 and dtype == "q8_0":
            w = _q8_0(w) if w.shape[-1] % 32 == 0 else w.half().float()
        state[name] = w
    out.load_state_dict(state)
    return out


@pytest.mark.parametrize("style", STYLES)
def test_round_trip_f32_is_exact(style, tokenizer, tmp_path):
    model = _model(STYLES[style][1])
    save_gguf(model, tokenizer, tmp_path / "m.gguf")
    back, back_tokenizer = load_gguf(tmp_path / "m.gguf")
    assert back.config == model.config
    idx = _idx(model.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(back(idx), model(idx))
    for text in TEXTS:
        assert back_tokenizer.encode(text, allowed_special="all") == tokenizer.encode(
            text, allowed_special="all"
        )


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
@pytest.mark.parametrize("style", ["gpt2", "llama", "qwen3", "qwen3_moe"])
def test_round_trip_rounds_as_the_format_does(style, dtype, tokenizer, tmp_path):
    """The loaded weights are the original ones rounded the format's way, nothing else: the
    logits equal those of `_rounded` (up to float32 summation order), and stay near the
    original's (f16 keeps 11 significant bits, bf16 8, q8_0 about 7 per block)."""
    model = _model(STYLES[style][1])
    save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype=dtype)
    back, _ = load_gguf(tmp_path / "m.gguf")
    idx = _idx(model.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(back(idx), _rounded(model, dtype)(idx), atol=1e-5, rtol=0)
        drift = (back(idx) - model(idx)).abs().max().item()
    if not model.config.n_experts:  # (rounding the router may change a token's experts)
        assert drift < {"f16": 0.005, "bf16": 0.03, "q8_0": 0.1}[dtype]
    assert drift > 0  # the format really rounded


def test_gguf_reader_sees_what_llama_cpp_reads(tokenizer, tmp_path):
    model = _model({**STYLES["llama"][1], "d_model": 64})  # rows of 64: whole q8_0 blocks
    save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="q8_0")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    meta = {k: f.contents() for k, f in reader.fields.items() if f.types}
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    expected = {
        "llama.block_count": 2, "llama.context_length": 64, "llama.embedding_length": 64,
        "llama.feed_forward_length": model.config.d_ff, "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2, "llama.attention.key_length": 16,
        "llama.rope.dimension_count": 16, "llama.rope.freq_base": 5e4,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.eos_token_id": 299, "tokenizer.ggml.bos_token_id": 299,
        "tokenizer.ggml.add_bos_token": False,
    }  # fmt: skip
    assert {k: meta[k] for k in expected} == expected
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert len(meta["tokenizer.ggml.tokens"]) == 301  # one per embedding row
    tokens = meta["tokenizer.ggml.tokens"]  # bytes spelled as GPT-2 spells them: space = Ġ
    assert (tokens[65], tokens[32], tokens[299]) == ("A", "Ġ", "<|endoftext|>")
    assert meta["tokenizer.ggml.token_type"][299] == 3 and meta["tokenizer.ggml.token_type"][300] == 5
    assert len(meta["tokenizer.ggml.merges"]) == 43
    tensors = {t.name: (t.tensor_type.name, [int(n) for n in t.shape]) for t in reader.tensors}
    d, kv, ff = 64, 2 * 16, model.config.d_ff
    want = {
        "token_embd.weight": ("Q8_0", [d, 301]), "output.weight": ("Q8_0", [d, 301]),
        "output_norm.weight": ("F32", [d]),
        "blk.1.attn_norm.weight": ("F32", [d]), "blk.1.ffn_norm.weight": ("F32", [d]),
        "blk.1.attn_q.weight": ("Q8_0", [d, d]), "blk.1.attn_k.weight": ("Q8_0", [d, kv]),
        "blk.1.attn_v.weight": ("Q8_0", [d, kv]), "blk.1.attn_output.weight": ("Q8_0", [d, d]),
        "blk.1.ffn_gate.weight": ("Q8_0", [d, ff]), "blk.1.ffn_up.weight": ("Q8_0", [d, ff]),
        "blk.1.ffn_down.weight": ("Q8_0" if ff % 32 == 0 else "F16", [ff, d]),
    }  # fmt: skip  (GGUF lists dimensions innermost first)
    assert {k: tensors[k] for k in want} == want
    assert len(tensors) == 3 + 9 * 2


def test_llama_rows_are_permuted_for_adjacent_pair_rope(tokenizer, tmp_path):
    """llama.cpp's llama rotates adjacent pairs: head rows (a0 a1 .. b0 b1 ..) are stored as
    (a0 b0 a1 b1 ..); qwen2/qwen3 rotate halves as buildlm does and are stored unpermuted."""
    rows = torch.arange(8.0).reshape(8, 1)  # one head of 8 rows
    assert permute_rope(rows, 1).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert torch.equal(permute_rope(permute_rope(rows, 1), 1, inverse=True), rows)
    for style, permuted in (("llama", True), ("qwen2", False)):
        model = _model(STYLES[style][1])
        save_gguf(model, tokenizer, tmp_path / f"{style}.gguf")
        reader = gguf.GGUFReader(tmp_path / f"{style}.gguf")
        (stored,) = [t for t in reader.tensors if t.name == "blk.0.attn_q.weight"]
        q = torch.from_numpy(np.array(stored.data))
        ours = model.blocks[0].attn.qkv.weight[:48]
        assert torch.equal(q, permute_rope(ours, 4) if permuted else ours)


def test_experts_are_stored_stacked(tokenizer, tmp_path):
    model = _model(STYLES["qwen3_moe"][1])
    save_gguf(model, tokenizer, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    meta = {k: f.contents() for k, f in reader.fields.items() if f.types}
    assert meta["general.architecture"] == "qwen3moe"
    assert (meta["qwen3moe.expert_count"], meta["qwen3moe.expert_used_count"]) == (5, 3)
    assert meta["qwen3moe.expert_feed_forward_length"] == 32
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    assert shapes["blk.1.ffn_gate_inp.weight"] == [48, 5]
    assert shapes["blk.1.ffn_gate_exps.weight"] == [48, 32, 5]  # (n_experts, out, in) in torch
    assert shapes["blk.1.ffn_down_exps.weight"] == [32, 48, 5]
    (gate,) = [t for t in reader.tensors if t.name == "blk.0.ffn_gate_exps.weight"]
    assert torch.equal(torch.from_numpy(np.array(gate.data)), model.blocks[0].mlp.experts.w_gate)


def test_tokenizer_fields_match_hugging_face_spelling(tmp_path):
    """GPT-2's real tokenizer: the GGUF token strings are the ones in its tokenizer.json vocab,
    the merges are its merges, and the ids come back equal."""
    import json

    gpt2 = Tokenizer.pretrained("gpt2")
    fields = tokenizer_fields(gpt2, 50257)
    gpt2.save_hf(tmp_path / "tokenizer.json")
    hf = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    assert fields["tokens"] == sorted(hf["vocab"], key=hf["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in hf["merges"]]
    assert fields["merges"] == merges
    back = tokenizer_from_fields(fields)
    for text in TEXTS:
        assert back.encode(text, allowed_special="all") == gpt2.encode(text, allowed_special="all")


def test_tokenizer_with_an_unknown_pattern_is_refused(tmp_path):
    odd = Tokenizer.train("aaa bbb ccc " * 10, 260, pattern=r"\w+|\s")
    with pytest.raises(ValueError, match="no llama.cpp name"):
        tokenizer_fields(odd, 261)


def _checkpoint(tmp_path, tokenizer, style="qwen2"):
    model = _model(STYLES[style][1])
    run = tmp_path / "run"
    save_checkpoint(run, 5, model, {"model": model.config.to_dict()}, tokenizer=tokenizer)
    return model, run


def test_cli_to_gguf_and_back(tokenizer, tmp_path, capsys):
    model, run = _checkpoint(tmp_path, tokenizer)
    out = tmp_path / "m.gguf"
    cli_main(["convert", "--to", "gguf", str(run), "--out", str(out), "--dtype", "f32"])
    assert "wrote GGUF file" in capsys.readouterr().out
    cli_main(["convert", "--from", "gguf", str(out), "--out", str(tmp_path / "ckpt")])
    loaded = load_checkpoint(tmp_path / "ckpt")
    idx = _idx(model.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded.model(idx), model(idx))
    assert loaded.tokenizer.encode(TEXTS[2]) == tokenizer.encode(TEXTS[2])


def test_buildlm_load_opens_a_gguf_file(tokenizer, tmp_path):
    import buildlm

    model = _model(STYLES["gpt2"][1])
    save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="bf16")
    lm = buildlm.load(tmp_path / "m.gguf")
    idx = _idx(model.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(idx), _rounded(model, "bf16")(idx), atol=1e-5, rtol=0)
    assert isinstance(lm.generate("Hello", max_new_tokens=3), str)


def test_cli_never_overwrites(tokenizer, tmp_path):
    _, run = _checkpoint(tmp_path, tokenizer)
    out = tmp_path / "m.gguf"
    argv = ["--to", "gguf", str(run), "--out", str(out)]
    convert(argv)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="exists; pass --force"):
        convert(argv + ["--dtype", "q8_0"])
    assert out.read_bytes() == before
    convert(argv + ["--dtype", "q8_0", "--force"])  # an earlier GGUF file: replaced on request
    assert out.read_bytes() != before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(ValueError, match="not a GGUF file"):
        convert(["--to", "gguf", str(run), "--out", str(notes), "--force"])
    assert notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "notes.txt", "run"]


def test_cli_unsupported_family_and_dtype(tokenizer, tmp_path):
    model = _model(dict(**LLAMA_LIKE | {"mlp": "gelu"}))  # no Hugging Face family computes it
    run = tmp_path / "run"
    save_checkpoint(run, 1, model, {"model": model.config.to_dict()}, tokenizer=tokenizer)
    result = subprocess.run(
        [sys.executable, "-m", "buildlm", "convert", "--to", "gguf", str(run), "--out",
         str(tmp_path / "m.gguf")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("buildlm convert: error: GGUF export supports gpt2, llama, qwen2, qwen3")
    assert line.endswith("this model is none of them (`buildlm convert --to hf` exports more families)")
    model = _model(dict(**LLAMA_LIKE, qk_norm=True, n_experts=4, router_renormalize=False))
    with pytest.raises(ValueError, match="renormalises the chosen experts"):
        save_gguf(model, tokenizer, tmp_path / "m.gguf")
    _, run = _checkpoint(tmp_path / "b", tokenizer)
    with pytest.raises(ValueError, match="unknown GGUF dtype 'q4_0'; choose one of: f32, f16"):
        convert(["--to", "gguf", str(run), "--out", str(tmp_path / "m.gguf"), "--dtype", "q4_0"])
    with pytest.raises(ValueError, match="--model-type applies to --to hf only"):
        convert(["--to", "gguf", str(run), "--out", str(tmp_path / "m.gguf"), "--model-type", "qwen2"])
    assert not (tmp_path / "m.gguf").exists()


def test_reading_bad_files(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        load_gguf(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_gguf(tmp_path / "missing.gguf")
    writer = gguf.GGUFWriter(tmp_path / "bert.gguf", "bert")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="architecture 'bert' is not supported; buildlm reads: gpt2"):
        load_gguf(tmp_path / "bert.gguf")


# --- the README's "Run it elsewhere" section, run as it is written ---------------------------

ROOT = Path(__file__).resolve().parents[2]
SHAKESPEARE = ROOT / "src" / "buildlm" / "pretrained" / "shakespeare-small"


def _readme_section() -> tuple[list[str], str, list[str]]:
    """The section's ``buildlm convert`` lines, its Python block and its other shell lines."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Run it elsewhere")[1].split("\n## ")[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    (python,) = [code for lang, code in blocks if lang == "python"]
    shell = [line for lang, code in blocks if lang == "bash" for line in code.splitlines()]
    converts = [line for line in shell if line.startswith("buildlm convert")]
    return converts, python, [line for line in shell if line not in converts]


@pytest.fixture(scope="module")
def readme_home(tmp_path_factory):
    """A folder where the README's convert commands have run on the bundled shakespeare-small."""
    home = tmp_path_factory.mktemp("home")
    converts, _, _ = _readme_section()
    assert len(converts) == 3
    cwd = os.getcwd()
    os.chdir(home)
    try:
        for line in converts:
            line = line.replace("runs/<date-time>", str(SHAKESPEARE))
            convert(shlex.split(line)[2:])
    finally:
        os.chdir(cwd)
    return home


def test_readme_converts_and_transformers_snippet(readme_home, monkeypatch, capsys):
    _, python, _ = _readme_section()
    original = load_checkpoint(SHAKESPEARE).model
    back = load_checkpoint(readme_home / "ckpt" / "from-gguf").model  # went through q8_0
    idx = torch.tensor([[5, 17, 300, 4000, 12]])
    with torch.no_grad():
        torch.testing.assert_close(back(idx), _rounded(original, "q8_0")(idx), atol=1e-4, rtol=0)
    monkeypatch.chdir(readme_home)
    exec(python, {})
    assert capsys.readouterr().out.startswith("ROMEO:")


def _shell_line(prefix: str) -> str:
    _, _, others = _readme_section()
    (line,) = [line for line in others if line.startswith(prefix)]
    return line


def test_readme_llama_cpp_python_line(readme_home):
    line = _shell_line("python -c")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.skip("llama.cpp's Python binding is not installed (pip install llama-cpp-python)")
    out = subprocess.run(
        [sys.executable, *shlex.split(line)[1:]], cwd=readme_home, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) > 0


@pytest.mark.parametrize("program", ["llama-cli", "ollama"])
def test_readme_llama_cpp_and_ollama_lines(readme_home, program):
    line = _shell_line(program if program == "llama-cli" else "echo")
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed on this machine; the README line is {line!r}")
    out = subprocess.run(
        ["bash", "-c", line], cwd=readme_home, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr


def test_llamacpp_agrees():
    """llama.cpp loads the exports and its tokens, logits and greedy tokens match buildlm's."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.skip(
            "llama.cpp's Python binding is not installed: pip install llama-cpp-python compiles "
            "it (RESULTS.md: GGUF), then this runs benchmarks/gguf_llamacpp.py --tiny"
        )
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gguf_llamacpp.py"), "--tiny"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
