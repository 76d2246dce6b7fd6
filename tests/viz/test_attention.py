"""The attention heatmap shows exactly the weights the model computes, for the layer and head asked."""

import math

import pytest
import torch
import torch.nn.functional as F

from buildlm.viz import attention_matrix, plot_attention

TEXT = "The quick brown fox jumps over the lazy dog."


def _layer0_reference(model, ids, head):
    """Layer 0's attention written out from the weights, independently of the model's code."""
    cfg = model.config
    d, hd = cfg.d_model, cfg.head_dim
    idx = torch.tensor([ids])
    block = model.blocks[0]
    x = model.tok_emb.weight[idx] + model.pos_emb.weight[: len(ids)]  # (1, T, d)
    h = F.layer_norm(x, (d,), block.norm1.weight, block.norm1.bias, cfg.norm_eps)
    qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias  # (1, T, 3d)
    q = qkv[0, :, head * hd : (head + 1) * hd]  # (T, hd)
    k = qkv[0, :, d + head * hd : d + (head + 1) * hd]
    scores = q @ k.T / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1)


def test_heatmap_is_the_models_attention(model, tokenizer, tmp_path, png_size):
    ids = tokenizer.encode(TEXT)
    fig = plot_attention(
        model, tokenizer, TEXT, tmp_path / "attn.png", layer=0, head=2, figsize=(5, 4), dpi=60
    )
    shown = torch.tensor(fig.axes[0].images[0].get_array().data)
    with torch.no_grad():
        expected = _layer0_reference(model, ids, head=2)
    torch.testing.assert_close(shown, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(shown.sum(dim=-1), torch.ones(len(ids)), atol=1e-5)
    assert torch.all(shown.triu(1) == 0)  # causal: nothing above the diagonal
    other = attention_matrix(model, ids, layer=0, head=1)
    assert not torch.allclose(other, shown, atol=1e-3)  # a different head looks elsewhere
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[:3] == ["The", "\u00b7quick", "\u00b7brown"]  # leading spaces made visible
    assert png_size(tmp_path / "attn.png") == (300, 240)


def test_layer_and_head_pick_the_matching_weights(model, tokenizer, tmp_path):
    ids = tokenizer.encode(TEXT)
    with torch.no_grad():
        weights = model.get_attention_weights(torch.tensor([ids]))
    fig = plot_attention(model, tokenizer, TEXT, tmp_path / "a.png", layer=1, head=3, max_tokens=5)
    shown = torch.tensor(fig.axes[0].images[0].get_array().data)
    # Only the last 5 tokens are kept, run on their own (position 0 is the 5th-last token).
    with torch.no_grad():
        cropped = model.get_attention_weights(torch.tensor([ids[-5:]]))[1][0, 3]
    torch.testing.assert_close(shown, cropped)
    assert shown.shape == (5, 5) and weights[1].shape == (1, 4, len(ids), len(ids))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(layer=2), "layer 2 does not exist"), (dict(head=4), "head 4 does not exist")],
)
def test_bad_layer_or_head_is_a_clear_error(model, tokenizer, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_attention(model, tokenizer, TEXT, tmp_path / "a.png", **kwargs)
    assert not (tmp_path / "a.png").exists()
