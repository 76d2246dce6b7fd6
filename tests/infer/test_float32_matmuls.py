"""Half-precision products in float32 (buildlm.infer.float32_matmuls): values, routing, engine use."""

import pytest
import torch
import torch.nn.functional as F

from buildlm.infer import float32_matmuls as f32
from buildlm.infer.engine import Engine


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of bf16 numbers at |x| (8 significant bits)."""
    return torch.exp2(torch.floor(torch.log2(x.abs().clamp(min=1e-30))) - 7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float32_linear_is_the_product_rounded_once(monkeypatch, dtype):
    """Against a float64 product of the same 16-bit values: at most one ulp off, and the weight
    converted in several blocks (the last one ragged) gives the same as in one."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 64, generator=gen).to(dtype)
    w = torch.randn(100, 64, generator=gen).to(dtype)
    b = torch.randn(100, generator=gen).to(dtype)
    exact = F.linear(x.double(), w.double(), b.double())
    whole = f32.float32_linear(x, w, b)
    monkeypatch.setattr(f32, "CHUNK_BYTES", 4 * 64 * 30)  # blocks of 30 rows: 30, 30, 30, 10
    blocks = f32.float32_linear(x, w, b)
    assert whole.dtype == dtype and whole.shape == (3, 5, 100)
    torch.testing.assert_close(blocks, whole, rtol=0, atol=0)
    ulp = bf16_ulp(exact) if dtype == torch.bfloat16 else exact.abs() * 2**-10
    assert ((whole.double() - exact).abs() <= ulp + 1e-6).all()
    assert (whole == exact.to(dtype)).float().mean() > 0.97  # rounded once, almost always exact
    assert torch.equal(f32.float32_linear(x, w), f32.float32_linear(x, w, None))


def spy_on_float32_linear(monkeypatch) -> list[tuple[int, ...]]:
    """Record the row shape of every product routed to float32_linear (which still runs)."""
    calls = []
    real = f32.float32_linear
    monkeypatch.setattr(f32, "float32_linear", lambda x, *a: calls.append(x.shape[:-1]) or real(x, *a))
    return calls


def test_mode_routes_only_half_precision_products_with_enough_rows(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    layer = torch.nn.Linear(64, 48).to(torch.bfloat16)
    many = torch.randn(2, 4, 64, generator=gen).to(torch.bfloat16)  # 8 rows
    few = many[:1, :7]  # 7 rows
    fp32_in = torch.randn(8, 64, generator=gen)
    expected = f32.float32_linear(many, layer.weight, layer.bias)
    calls = spy_on_float32_linear(monkeypatch)
    with torch.no_grad(), f32.Float32Matmuls():
        routed = layer(many)
        kept = layer(few)
        fp32_out = F.linear(fp32_in, layer.weight.float())
    assert calls == [(2, 4)]  # only the 8-row bf16 product
    assert torch.equal(routed, expected)
    with torch.no_grad():
        assert torch.equal(kept, layer(few))
        assert torch.equal(fp32_out, F.linear(fp32_in, layer.weight.float()))


def test_the_mode_is_used_only_where_it_pays(monkeypatch, make_model):
    model = make_model("gpt2")
    assert isinstance(f32.float32_matmuls(model, rows=64), type(f32.contextlib.nullcontext()))  # fp32
    model.to(torch.bfloat16)
    assert isinstance(f32.float32_matmuls(model, rows=f32.MIN_ROWS), f32.Float32Matmuls) is (
        not f32.has_native_matmul(torch.bfloat16)
    )
    monkeypatch.setattr(f32, "has_native_matmul", lambda dtype: False)  # an AVX2-only CPU
    assert isinstance(f32.float32_matmuls(model, rows=f32.MIN_ROWS), f32.Float32Matmuls)
    assert not isinstance(f32.float32_matmuls(model, rows=f32.MIN_ROWS - 1), f32.Float32Matmuls)
    monkeypatch.setattr(f32, "has_native_matmul", lambda dtype: True)  # a CPU with bf16 math
    assert not isinstance(f32.float32_matmuls(model, rows=64), f32.Float32Matmuls)


def test_engine_prefills_and_decodes_large_batches_in_float32(monkeypatch, gpt2_pair):
    """A bf16 engine routes the prefill (rows = prompt tokens) and decode steps of >= 8 rows
    through float32 products, not batch-1 decode steps, and picks the same tokens as with
    16-bit products everywhere."""
    _, fp32_model = gpt2_pair
    model = type(fp32_model)(fp32_model.config).eval()
    model.load_state_dict(fp32_model.state_dict())
    model.to(torch.bfloat16)
    monkeypatch.setattr(f32, "has_native_matmul", lambda dtype: False)  # as on CI's AVX2 CPU
    calls = spy_on_float32_linear(monkeypatch)
    prompts = [[(7 * i + j) % 67 for j in range(3 + i % 4)] for i in range(8)]
    engine = Engine(model)
    batched = engine.generate(prompts, max_new_tokens=6, temperature=0)
    layers = 4 * model.config.n_layers  # Linear layers per pass, then the head on the last position
    prefill = [(8, 6)] * layers + [(8,)]  # 8 prompts left-padded to 6 tokens
    assert calls == prefill + ([(8, 1)] * layers + [(8,)]) * 5  # then 5 decode steps of 8 rows
    calls.clear()
    alone = engine.generate(prompts[0], max_new_tokens=6, temperature=0)
    assert calls == []  # 3 prompt tokens, then 1 row per step: the 16-bit kernels
    monkeypatch.setattr(f32, "MIN_ROWS", 10**9)  # never route
    plain = engine.generate(prompts, max_new_tokens=6, temperature=0)
    assert [c.token_ids for c in batched] == [c.token_ids for c in plain]
    assert alone[0].token_ids == batched[0].token_ids
