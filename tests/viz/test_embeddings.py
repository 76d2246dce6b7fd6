"""The embedding projection is PCA of the chosen rows of the token-embedding table."""

import numpy as np
import pytest
import torch

from buildlm.viz import pca_2d, plot_embeddings

WORDS = [" king", " queen", " man", " woman", " Paris", " France", " cat"]


def _numpy_pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, (s[:2] ** 2) / (s**2).sum()


def _assert_equal_up_to_sign(got: np.ndarray, ref: np.ndarray) -> None:
    for j in range(ref.shape[1]):
        sign = 1.0 if np.dot(got[:, j], ref[:, j]) >= 0 else -1.0
        np.testing.assert_allclose(got[:, j], sign * ref[:, j], rtol=1e-6, atol=1e-9)


def test_coordinates_match_numpy_svd(model, tokenizer, tmp_path, png_size):
    ids = [tokenizer.encode(w)[0] for w in WORDS]
    fig = plot_embeddings(
        model, tokenizer, [*WORDS, 50256], tmp_path / "emb.png", figsize=(3, 3), dpi=80
    )
    x = model.tok_emb.weight.detach().double().numpy()[[*ids, 50256]]
    ref, ref_explained = _numpy_pca(x)
    shown = np.asarray(fig.axes[0].collections[0].get_offsets())
    _assert_equal_up_to_sign(shown, ref)
    coords, explained = pca_2d(torch.tensor(x))
    np.testing.assert_allclose(explained.numpy(), ref_explained, rtol=1e-9)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["\u00b7king", "\u00b7queen", "\u00b7man", "\u00b7woman", "\u00b7Paris",
                      "\u00b7France", "\u00b7cat", "<|endoftext|>"]  # fmt: skip
    assert png_size(tmp_path / "emb.png") == (240, 240)


def test_pca_recovers_a_known_plane_and_fixes_the_sign():
    # Points on the plane spanned by two known directions (plus a shift): PCA finds that plane,
    # and the distances between points survive the projection exactly.
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(10, 2, generator=gen, dtype=torch.float64))[0].T  # (2, 10)
    plane = torch.randn(20, 2, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.0])
    x = plane @ basis + 5.0
    coords, explained = pca_2d(x)
    torch.testing.assert_close(torch.cdist(coords, coords), torch.cdist(x, x))
    assert explained.sum().item() == pytest.approx(1.0)
    # The mirrored cloud has the same covariance, so the same axes once the sign convention
    # fixes them (whatever signs the SVD happened to return): every point lands mirrored.
    again, _ = pca_2d(-x)
    torch.testing.assert_close(again, -coords)


def test_a_word_of_several_tokens_is_a_clear_error(model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="'kingdom' is 2 tokens"):
        plot_embeddings(model, tokenizer, [" king", "kingdom"], tmp_path / "e.png")
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        plot_embeddings(model, None, [1, 2, 60000], tmp_path / "e.png")
    with pytest.raises(ValueError, match="at least 2 vectors"):
        plot_embeddings(model, tokenizer, [" king"], tmp_path / "e.png")
