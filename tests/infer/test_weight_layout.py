"""`arrange_for_decoding` changes where the weights live and their strides, never what they are."""

import copy

import pytest
import torch
import torch.nn.functional as F

from buildlm.checkpoint_format import load_weights, save_weights
from buildlm.infer.engine import Engine
from buildlm.infer.weight_layout import (
    HUGE_PAGE,
    arrange_for_decoding,
    huge_page_bytes,
    prefers_transposed,
)
from buildlm.model import GPT, ModelConfig
from buildlm.model.quantize import quantize_int8


def _model(family: str = "gpt2", **overrides) -> GPT:
    torch.manual_seed(0)
    preset = {"gpt2": "gpt2-124m", "llama": "llama-small"}[family]
    cfg = ModelConfig.preset(
        preset, vocab_size=97, context_length=32, d_model=32, n_layers=2, n_heads=4, **overrides
    )
    return GPT(cfg).eval()


def test_the_layout_rule_follows_row_length_and_dtype():
    assert prefers_transposed(torch.empty(3072, 768))  # in <= out: (in, out) rows are longer
    assert prefers_transposed(torch.empty(768, 768))
    assert not prefers_transposed(torch.empty(768, 3072))  # in > out: (out, in) rows are longer
    assert not prefers_transposed(torch.empty(3072, 768, dtype=torch.bfloat16))  # no fast kernel
    assert not prefers_transposed(torch.empty(3072, 768, device="meta"))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_values_shapes_and_parameters_are_kept_and_logits_equal(family):
    model = _model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {name: id(p) for name, p in model.named_parameters()}
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids)
    moved = arrange_for_decoding(model)
    assert moved >= sum(t.numel() * t.element_size() for t in before.values())
    assert {name: id(p) for name, p in model.named_parameters()} == params
    for name, value in model.state_dict().items():
        assert value.shape == before[name].shape
        assert torch.equal(value, before[name]), name
    with torch.no_grad():
        torch.testing.assert_close(model(ids), expected, rtol=1e-5, atol=1e-5)


def test_each_matrix_takes_the_layout_the_rule_picks():
    model = _model("gpt2")
    arrange_for_decoding(model)
    block = model.blocks[0]
    fc, proj = block.mlp.fc.weight, block.mlp.proj.weight  # (128, 32) and (32, 128)
    assert fc.stride() == (1, fc.shape[0])  # stored (in, out)
    assert proj.is_contiguous()  # stored (out, in)
    emb = model.tok_emb.weight  # tied head (97, 32): stored (32, 97)
    assert model.lm_head is None and emb.stride() == (1, emb.shape[0])
    assert model.pos_emb.weight.is_contiguous()  # a lookup table only
    model.to(torch.bfloat16)
    arrange_for_decoding(model)  # half precision: every matrix back to (out, in)
    assert block.mlp.fc.weight.is_contiguous() and model.tok_emb.weight.is_contiguous()


def test_the_arena_is_aligned_to_huge_pages_and_not_shared_by_tensors():
    memory = huge_page_bytes(3 * HUGE_PAGE + 5)
    assert memory.numel() == 3 * HUGE_PAGE + 5 and memory.data_ptr() % HUGE_PAGE == 0
    model = _model()
    arrange_for_decoding(model)
    spans = sorted(
        (p.data_ptr(), p.data_ptr() + p.numel() * p.element_size()) for p in model.parameters()
    )
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert all(start % 64 == 0 for start, _ in spans)


def test_quantized_buffers_move_too():
    model = _model()
    quantize_int8(model)
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(ids)
    arrange_for_decoding(model)
    fc = model.blocks[0].mlp.fc.weight_int8  # (128, 32), computed in float32: stored (in, out)
    assert fc.stride() == (1, fc.shape[0]) and fc.to(torch.float32).stride() == fc.stride()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), expected, rtol=1e-5, atol=1e-5)


def test_a_model_still_trains_and_saves_the_same_after_an_engine_used_it(tmp_path):
    """SFT scores a model with the Engine, then trains it: the re-laid weights must train alike."""
    plain = _model("gpt2", dropout=0.0).train()
    arranged = copy.deepcopy(plain)
    with torch.inference_mode():  # as a server might build it: the weights must stay trainable
        Engine(arranged)  # arranges the weights (CPU)
    arranged.train()
    assert not arranged.blocks[0].mlp.fc.weight.is_contiguous()
    gen = torch.Generator().manual_seed(3)
    losses = {}
    for name, model in (("plain", plain), ("arranged", arranged)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
        gen.manual_seed(3)
        losses[name] = []
        for _ in range(5):
            ids = torch.randint(0, 97, (4, 17), generator=gen)
            loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    assert losses["arranged"] == pytest.approx(losses["plain"], rel=1e-5)
    for p, q in zip(plain.parameters(), arranged.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    save_weights(arranged, tmp_path / "model.safetensors")
    fresh = _model("gpt2", dropout=0.0)
    load_weights(fresh, tmp_path / "model.safetensors")
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, arranged.state_dict()[name]), name


def test_engine_tokens_are_the_same_with_and_without_arranging():
    model = _model("llama")
    prompts = [[5, 6, 7], [1, 2, 3, 4, 5, 6]]
    kwargs = dict(max_new_tokens=12, temperature=0, stop_token_ids=())
    plain = Engine(copy.deepcopy(model), arrange_weights=False).generate(prompts, **kwargs)
    arranged = Engine(model).generate(prompts, **kwargs)
    assert [c.token_ids for c in arranged] == [c.token_ids for c in plain]
    assert not model.blocks[0].attn.qkv.weight.is_contiguous()  # it did re-lay the weights


def test_an_arranged_model_is_not_copied_again_until_its_tensors_change():
    """Evaluation builds an Engine per call: re-arranging an unchanged model would copy it each time."""
    model = _model()
    assert arrange_for_decoding(model) > 0
    where = [p.data_ptr() for p in model.parameters()]
    assert arrange_for_decoding(model) == 0
    Engine(model)
    assert [p.data_ptr() for p in model.parameters()] == where
    model.to(torch.bfloat16)  # new tensors, in the old strides: arranged again
    assert arrange_for_decoding(model) > 0
    assert model.blocks[0].mlp.fc.weight.is_contiguous()
    assert arrange_for_decoding(model, huge_pages=False) > 0  # another kind of memory asked for
