"""save_hf: a buildlm model written as a Hugging Face folder loads in transformers with the same
logits; a trained buildlm checkpoint exports and comes back."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from buildlm.checkpoint_format import load_checkpoint
from buildlm.cli import main as cli_main
from buildlm.data.corpora import load_corpus
from buildlm.hub import load_hf, save_gguf, save_hf
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer
from buildlm.train.checkpoint import save_checkpoint

LLAMA_LIKE = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, norm_eps=1e-6)
SCALING = {
    "type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_context_length": 16,
}  # fmt: skip
STYLES = {
    "gpt2": ("gpt2", dict(vocab_size=101, d_ff=80)),
    "gpt2-untied": ("gpt2", dict(vocab_size=131, tie_embeddings=False)),
    "llama": ("llama", dict(**LLAMA_LIKE, n_kv_heads=2, tie_embeddings=False, rope_theta=5e4)),
    "llama-scaled": ("llama", dict(**LLAMA_LIKE, n_kv_heads=1, rope_scaling=SCALING)),
    "llama-bias": ("llama", dict(**LLAMA_LIKE | {"bias": True}, tie_embeddings=False)),
    "qwen2": ("qwen2", dict(**LLAMA_LIKE, n_kv_heads=2, qkv_bias=True)),
    "qwen3": ("qwen3", dict(**LLAMA_LIKE, n_kv_heads=2, qk_norm=True, head_dim=16)),
}


def _model(overrides: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    base = dict(vocab_size=97, context_length=64, d_model=48, n_layers=2, n_heads=4)
    model = GPT(ModelConfig(**{**base, **overrides})).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # norms off ones, biases off zeros
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _assert_same_logits(model: GPT, hf) -> None:
    idx = torch.randint(
        0, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=idx).logits, model(idx), atol=1e-5, rtol=1e-5)


def test_the_main_jobs_model_exports_as_qwen3(tmp_path):
    """`buildlm train`'s model (preset qwen3-tiny, with the main job's vocabulary and context)
    is one transformers computes: a user's five-minute run goes to Hugging Face and llama.cpp."""
    cfg = ModelConfig.preset("qwen3-tiny", vocab_size=4096, context_length=128)
    model = _model({k: getattr(cfg, k) for k in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads",
                                                  "d_ff", "bias", "norm", "position", "mlp", "qk_norm", "tie_embeddings")})  # fmt: skip
    save_hf(model, None, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "qwen3"
    _assert_same_logits(model, AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval())


@pytest.mark.parametrize("style", STYLES)
def test_transformers_loads_the_export(style, tmp_path):
    model_type, overrides = STYLES[style]
    model = _model(overrides)
    save_hf(model, None, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == model_type
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == config["architectures"][0]
    _assert_same_logits(model, hf)
    back, tok = load_hf(tmp_path / "hf")  # and buildlm reads its own export
    assert tok is None and back.config == model.config
    for name, t in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name


def test_bf16_export_keeps_dtype(tmp_path):
    model = _model(STYLES["qwen2"][1]).to(torch.bfloat16)
    save_hf(model, None, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    back, _ = load_hf(tmp_path)
    assert all(p.dtype == torch.bfloat16 for p in back.parameters())
    assert torch.equal(back.blocks[1].attn.qkv.bias, model.blocks[1].attn.qkv.bias)


def test_export_refuses_what_transformers_cannot_compute(tmp_path):
    model = _model(dict(norm_placement="post"))
    with pytest.raises(ValueError, match="norm_placement='post'"):
        save_hf(model, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_relu2_export_is_refused_in_one_line(tmp_path, capsys):
    """No exported family has the squared-ReLU MLP: HF and GGUF say so, and write nothing."""
    model = _model(dict(mlp="relu2"))
    for model_type in (None, "gpt2", "llama"):
        with pytest.raises(ValueError, match=r"^mlp='relu2' \(the squared-ReLU MLP\) has no Hugging"):
            save_hf(model, None, tmp_path / "out", model_type=model_type)
    tokenizer = Tokenizer.train("abc " * 50, 260)
    with pytest.raises(ValueError, match=r"^mlp='relu2' \(the squared-ReLU MLP\) has no GGUF export"):
        save_gguf(model, tokenizer, tmp_path / "m.gguf")
    run = tmp_path / "run"
    save_checkpoint(run, 1, model, {"model": model.config.to_dict()}, tokenizer)
    capsys.readouterr()  # the tokenizer's training progress
    for to, out in (("hf", "hf"), ("gguf", "m.gguf")):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["convert", "--to", to, str(run), "--out", str(tmp_path / out)])
        assert exit_.value.code != 0
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "mlp='relu2'" in line and "--model.mlp gelu or swiglu" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_export_never_overwrites_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    save_hf(_model({}), None, tmp_path)  # written beside the user's file
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "model.safetensors").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my settings")  # a name the export would use
    with pytest.raises(ValueError, match="config.json, which buildlm did not write"):
        save_hf(_model({}), None, mine, force=True)
    assert [p.name for p in mine.iterdir()] == ["config.json"]
    assert (mine / "config.json").read_text() == "my settings"


def test_interrupted_export_leaves_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "hf"
    save_hf(_model({}), None, out)
    before = (out / "model.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("buildlm.hub.save.write_safetensors", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_hf(_model({}, seed=1), None, out, force=True)
    assert (out / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary folder left


@pytest.fixture(scope="module")
def trained_tokenizer() -> Tokenizer:
    return Tokenizer.train(load_corpus("the-verdict")[:20000], 300, progress=False)


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_buildlm_checkpoint_exports_and_comes_back(style, tmp_path, trained_tokenizer):
    """`buildlm convert --to hf` then `--from hf`: same logits, same tokenizer, both ways."""
    overrides = {**STYLES[style][1], "vocab_size": trained_tokenizer.vocab_size}
    model = _model(overrides)
    run = tmp_path / "run"
    save_checkpoint(run, 5, model, {"model": model.config.to_dict()}, tokenizer=trained_tokenizer)
    cli_main(["convert", "--to", "hf", str(run), "--out", str(tmp_path / "hf")])

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    _assert_same_logits(model, hf)
    text = "It had always been his fate to have women say such things of him."
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok(text)["input_ids"] == trained_tokenizer.encode(text)
    assert hf_tok.eos_token == "<|endoftext|>"

    cli_main(["convert", "--from", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")])
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config["source"]["model_type"] == STYLES[style][0]
    assert loaded.model.config == model.config
    assert loaded.tokenizer.encode(text) == trained_tokenizer.encode(text)
    _assert_same_logits(loaded.model, hf)
