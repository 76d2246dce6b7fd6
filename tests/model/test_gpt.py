"""GPT: causality for every variant, cached decoding, FLOP count, init, and learning."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from buildlm.model import GPT, ModelConfig


def _config(**kw) -> ModelConfig:
    base = dict(vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4)
    return ModelConfig(**{**base, **kw})


VARIANTS = [
    dict(),
    dict(position="sinusoidal", attention="manual"),
    dict(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2, bias=False),
    dict(position="rope", n_kv_heads=1, qk_norm=True, tie_embeddings=False),
    dict(norm_placement="post", attention="manual"),
    dict(norm_placement="post", position="rope", mlp="swiglu"),
    # OLMo 2: norms on the sublayer outputs, q/k norm over the whole projection.
    dict(position="rope", norm="rmsnorm", norm_placement="branch_post", qk_norm=True,
         qk_norm_scope="all", n_kv_heads=2),
    # Gemma 2: sandwich norms with (1 + w) gains, GeGLU, scaled embeddings and queries, caps.
    dict(position="rope", norm="rmsnorm", norm_offset=1.0, norm_placement="sandwich",
         mlp="geglu", embed_scale=True, query_pre_attn_scalar=12, attn_logit_softcap=5.0,
         final_logit_softcap=8.0),
    # modded-nanogpt / nanochat: the squared-ReLU MLP with RoPE and RMSNorm.
    dict(position="rope", norm="rmsnorm", mlp="relu2", bias=False),
]  # fmt: skip


@pytest.mark.parametrize(
    "variant", VARIANTS, ids=lambda v: ",".join(map(str, v.values())) or "gpt2"
)
def test_changing_a_future_token_never_changes_earlier_logits(variant):
    torch.manual_seed(0)
    model = GPT(_config(**variant)).eval()
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        base = model(idx)
        for t in (0, 5, 15):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1) % 50
            out = model(changed)
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
            assert not torch.allclose(out[:, t:], base[:, t:])  # the change is seen from t on


@pytest.mark.parametrize("variant", VARIANTS[:4], ids=str)
def test_manual_and_sdpa_models_agree(variant):
    torch.manual_seed(0)
    fast = GPT(_config(**{**variant, "attention": "sdpa"})).eval()
    slow = GPT(_config(**{**variant, "attention": "manual"})).eval()
    slow.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(fast(idx), slow(idx), atol=1e-5, rtol=1e-5)


class ConcatCache:
    """The smallest real KV cache: concatenates keys/values per layer (see attention.KVCache)."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.offset = 0
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    def update(self, layer, k, v):
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        if layer == self.n_layers - 1:
            self.offset = k.shape[2]
        return k, v


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_cached_decoding_equals_full_forward(variant):
    torch.manual_seed(0)
    model = GPT(_config(**variant)).eval()
    idx = torch.randint(0, 50, (2, 12))
    cache = ConcatCache(model.config.n_layers)
    with torch.no_grad():
        full = model(idx)
        pieces = [model(idx[:, :5], cache), model(idx[:, 5:8], cache)]  # prefill, then a chunk
        pieces += [model(idx[:, t : t + 1], cache) for t in range(8, 12)]  # one token at a time
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_too_long_input_is_a_clear_error():
    model = GPT(_config())
    with pytest.raises(ValueError, match="exceeds context_length=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(17, dtype=torch.long))


@pytest.mark.parametrize("variant", [dict(), VARIANTS[2]], ids=["gpt2", "llama"])
def test_flops_per_token_matches_torch_flop_counter(variant):
    # The explicit attention path: PyTorch's counter has no formula for the CPU SDPA kernel.
    model = GPT(_config(**variant, attention="manual"))
    idx = torch.randint(0, 50, (3, 16))
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(idx)
        logits.sum().backward()
    assert counter.get_total_flops() / idx.numel() == model.flops_per_token(16)


def test_attention_weights_are_causal_distributions():
    torch.manual_seed(0)
    model = GPT(_config(n_layers=3)).eval()
    with torch.no_grad():
        weights = model.get_attention_weights(torch.randint(0, 50, (2, 10)))
    assert len(weights) == 3
    for w in weights:
        assert w.shape == (2, 4, 10, 10)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 10))
        assert torch.all(w.triu(diagonal=1) == 0)


def test_gpt2_initialisation():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("gpt2-124m", n_layers=8, vocab_size=2000)
    model = GPT(cfg)
    assert model.lm_head is None and "lm_head.weight" not in model.state_dict()
    std = lambda t: t.float().std().item()  # noqa: E731
    assert std(model.tok_emb.weight) == pytest.approx(0.02, rel=0.02)
    assert std(model.blocks[0].attn.qkv.weight) == pytest.approx(0.02, rel=0.02)
    residual = 0.02 / math.sqrt(2 * 8)
    assert std(model.blocks[3].attn.proj.weight) == pytest.approx(residual, rel=0.02)
    assert std(model.blocks[3].mlp.proj.weight) == pytest.approx(residual, rel=0.02)
    assert torch.all(model.blocks[2].mlp.fc.bias == 0)
    assert torch.all(model.blocks[2].norm1.weight == 1)
    untied = GPT(_config(tie_embeddings=False))
    assert untied.lm_head is not None
    assert untied.num_params() == GPT(_config()).num_params() + 50 * 32


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = GPT(_config(dropout=0.2))
    idx = torch.randint(0, 50, (2, 16))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx))
        model.train()
        assert not torch.equal(model(idx), model(idx))


@pytest.mark.parametrize("variant", [dict(), VARIANTS[2]], ids=["gpt2", "llama"])
def test_tiny_model_overfits_one_batch(variant):
    torch.manual_seed(0)
    model = GPT(_config(**variant, d_model=64, context_length=32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randint(0, 50, (4, 33))
    x, y = data[:, :-1], data[:, 1:]
    first = None
    for _ in range(100):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3.5  # ~ln(50) at the start
    assert loss.item() < 0.05


def test_configs_in_all_combinations_run_forward_and_backward():
    torch.manual_seed(0)
    idx = torch.randint(0, 50, (1, 8))
    for norm, position, mlp, placement in itertools.product(
        ("layernorm", "rmsnorm"), ("learned", "sinusoidal", "rope"), ("gelu", "swiglu", "geglu"),
        ("pre", "post", "branch_post", "sandwich"),
    ):  # fmt: skip
        model = GPT(_config(norm=norm, position=position, mlp=mlp, norm_placement=placement))
        model(idx).sum().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
