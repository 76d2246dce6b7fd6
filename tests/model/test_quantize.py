"""Weight-only int8: rounding error bounded per row, logits and perplexity barely move,
checkpoints round-trip through safetensors, and the bytes read per token drop ~4x."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from buildlm.data.corpora import load_corpus
from buildlm.model import GPT, ModelConfig
from buildlm.model.quantize import (
    QuantizedLinear,
    model_weight_bytes,
    quantize_int8,
    quantize_rows,
)


def _uneven_weight(seed: int = 0) -> torch.Tensor:
    """(40, 24) with row magnitudes spread over 4 decades, one outlier and one all-zero row."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(40, 24, generator=gen) * 10 ** torch.empty(40, 1).uniform_(-3, 1, generator=gen)
    w[3, 5] = 50.0  # an outlier sets its row's scale
    w[7] = 0.0
    return w


@pytest.mark.parametrize("seed", range(3))
def test_round_trip_error_is_at_most_half_a_step_per_row(seed):
    w = _uneven_weight(seed)
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == (40,)
    assert int(q.abs().max()) <= 127
    row_max = w.abs().amax(dim=1)
    nonzero = row_max > 0
    torch.testing.assert_close(scale[nonzero], row_max[nonzero] / 127)
    assert torch.all(q[nonzero].abs().amax(dim=1) == 127)  # the largest weight uses the full range
    assert torch.all(q[~nonzero] == 0)
    deq = q.double() * scale.double()[:, None]
    err = (w.double() - deq).abs()
    assert torch.all(err <= scale.double()[:, None] / 2 * (1 + 1e-6))  # round to nearest
    layer = QuantizedLinear.from_linear(_linear_from(w))
    torch.testing.assert_close(layer.weight, deq.float(), rtol=0, atol=0)
    assert torch.equal(layer.dequantize(), layer.weight)


def _linear_from(w: torch.Tensor, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias:
            lin.bias.copy_(torch.linspace(-1, 1, w.shape[0]))
    return lin


@pytest.mark.parametrize("bias", [True, False])
def test_quantized_linear_computes_with_the_dequantized_weight(bias):
    w = _uneven_weight(1)
    lin = _linear_from(w, bias)
    layer = QuantizedLinear.from_linear(lin)
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(2))
    deq = layer.weight_int8.double() * layer.scale.double()[:, None]  # (out, in)
    expected = x.double() @ deq.T + (lin.bias.double() if bias else 0)
    got = layer(x)
    assert got.shape == (2, 5, 40) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    # ... and so stays within the rounding bound of the float layer: sum_j |x_j| * scale_i / 2.
    bound = x.abs().double().sum(-1, keepdim=True) * layer.scale.double() / 2
    assert torch.all((got.double() - lin(x).double()).abs() <= bound + 1e-5)


def test_bf16_activations_work():
    layer = QuantizedLinear.from_linear(_linear_from(_uneven_weight(0)))
    x = torch.randn(3, 24, generator=torch.Generator().manual_seed(1))
    y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits: each product and the sum may be off by a few units of
    # 2**-8 of the terms' magnitudes (cancelling terms make a relative tolerance meaningless).
    scale_of_terms = x.abs() @ layer.dequantize().abs().T + layer.bias.abs()  # (3, 40)
    assert ((y.float() - layer(x)).abs() <= 2**-6 * scale_of_terms + 1e-6).all()


def _linear_names(model: nn.Module, kind: type) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, kind)}


def test_every_linear_is_replaced_except_skipped_ones():
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
        norm="rmsnorm", position="rope", mlp="swiglu", bias=False, tie_embeddings=False,
    )  # fmt: skip
    model = GPT(cfg)  # Llama-style: qkv, proj, gate, up, down per block, plus an untied head
    linears = _linear_names(model, nn.Linear)
    assert "lm_head" in linears and len(linears) == 2 * 5 + 1
    skipped = {"lm_head", "blocks.0.mlp.gate", "blocks.0.mlp.up", "blocks.0.mlp.down"}
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(idx)
    out = quantize_int8(model, skip=("lm_head", "blocks.0.mlp.*"))
    assert out is model  # in place
    assert _linear_names(model, nn.Linear) == skipped
    assert _linear_names(model, QuantizedLinear) == linears - skipped
    assert isinstance(model.tok_emb, nn.Embedding)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), expected, rtol=0.05, atol=0.02)


def test_tied_head_is_left_alone():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, context_length=16, d_model=32, n_layers=1, n_heads=4))
    assert model.lm_head is None
    emb = model.tok_emb.weight.detach().clone()
    quantize_int8(model)
    assert model.lm_head is None and torch.equal(model.tok_emb.weight, emb)
    assert not _linear_names(model, nn.Linear)
    with pytest.raises(TypeError, match="skip=\\('lm_head',\\)"):
        quantize_int8(model, skip="lm_head")


def _noisy_gpt(tie: bool = True, d_model: int = 64, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=97, context_length=32, d_model=d_model, n_layers=2, n_heads=4,
        tie_embeddings=tie,
    )  # fmt: skip
    model = GPT(cfg).eval()
    with torch.no_grad():  # weights well off their init: sharper, more varied logits
        for p in model.parameters():
            p.mul_(4 if p.dim() > 1 else 1)
    return model


@pytest.mark.parametrize("tie", [True, False])
def test_quantized_logits_are_close_to_float_logits(tie):
    model = _noisy_gpt(tie)
    idx = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(idx)
        got = quantize_int8(copy.deepcopy(model))(idx)
    rel = (got - expected).norm() / expected.norm()
    # Changed (it is quantized), but little: each layer's weights move by ~0.5% (RMS) of their
    # size, and the errors of 2 blocks and a head add up on these sharp random weights.
    assert 0 < rel < 3e-2
    agree = (got.argmax(-1) == expected.argmax(-1)).float().mean()
    assert agree > 0.95


def test_state_dict_round_trips_through_safetensors(tmp_path):
    model = quantize_int8(_noisy_gpt(tie=False), skip=("lm_head",))
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("blocks.0.attn.qkv.weight_int8").dtype == torch.int8
        assert f.get_tensor("blocks.0.attn.qkv.scale").dtype == torch.float32
        assert f.get_tensor("lm_head.weight").dtype == torch.float32
    assert "blocks.1.mlp.proj.weight_int8" in keys and "blocks.1.mlp.proj.weight" not in keys
    fresh = quantize_int8(_noisy_gpt(tie=False, seed=5), skip=("lm_head",))
    fresh.load_state_dict(load_file(str(path)), strict=True)
    idx = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(fresh(idx), model(idx))


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_model_weight_bytes_counts_one_row_of_each_lookup_table():
    tied = GPT(ModelConfig(vocab_size=97, context_length=32, d_model=64, n_layers=2, n_heads=4))
    d = 64 * 4  # one fp32 row
    everything = _bytes(tied.parameters())
    assert model_weight_bytes(tied, per_token=False) == everything
    # The tied head reads the whole embedding; only 1 of 32 position rows is read.
    assert model_weight_bytes(tied) == everything - 31 * d
    untied = _noisy_gpt(tie=False)
    everything = _bytes(untied.parameters())
    assert model_weight_bytes(untied) == everything - 31 * d - 96 * d


def test_bytes_read_per_token_drop_about_4x_for_the_linear_weights():
    model = _noisy_gpt(tie=False, d_model=128)
    before = model_weight_bytes(model)
    shapes = [(m.out_features, m.in_features, m.bias is not None)
              for m in model.modules() if isinstance(m, nn.Linear)]  # fmt: skip
    linear_fp32 = sum(4 * o * i + (4 * o if b else 0) for o, i, b in shapes)
    linear_int8 = sum(o * i + 4 * o + (4 * o if b else 0) for o, i, b in shapes)  # + scales
    quantize_int8(model)
    after = model_weight_bytes(model)
    assert before - after == linear_fp32 - linear_int8
    assert 3.5 < linear_fp32 / linear_int8 < 4.0
    assert before / after > 3.3  # the linear weights dominate what a decoding step reads


@pytest.fixture(scope="module")
def trained_byte_model() -> tuple[GPT, torch.Tensor]:
    """A tiny byte-level GPT trained briefly on The Verdict, and held-out bytes."""
    torch.manual_seed(0)
    data = torch.tensor(list(load_corpus("the-verdict").encode()), dtype=torch.long)
    train, val = data[:18000], data[18000:]
    cfg = ModelConfig(vocab_size=256, context_length=64, d_model=64, n_layers=2, n_heads=4)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        starts = torch.randint(0, len(train) - 65, (16,), generator=gen).tolist()
        x = torch.stack([train[s : s + 64] for s in starts])
        y = torch.stack([train[s + 1 : s + 65] for s in starts])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), val


def _perplexity(model: GPT, val: torch.Tensor) -> float:
    n = (len(val) - 1) // 64
    x, y = val[: n * 64].view(n, 64), val[1 : n * 64 + 1].view(n, 64)
    with torch.no_grad():
        return math.exp(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())


def test_perplexity_of_a_trained_model_barely_changes(trained_byte_model):
    model, val = trained_byte_model
    before = _perplexity(model, val)
    assert before < 40  # it learned something (uniform over bytes would be 256)
    quantized = quantize_int8(copy.deepcopy(model))
    after = _perplexity(quantized, val)
    assert after != before
    assert abs(after / before - 1) < 0.01
    x = val[:64][None]
    with torch.no_grad():
        expected, got = model(x), quantized(x)
    assert (got - expected).norm() / expected.norm() < 1e-2
