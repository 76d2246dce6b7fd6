"""Checks for stage 1 (tensors and embeddings): your modules against PyTorch's and buildlm's.

Each check builds your piece first (so an unfinished stub says ``NotImplementedError`` before
anything else), gives it the *same weights* as the reference through ``load_state_dict``, and
compares outputs. A failure raises ``AssertionError`` with what was expected, what came out,
and a hint.
"""

from __future__ import annotations

import torch
from torch import nn

from buildlm.model import GPT, ModelConfig
from buildlm.model.position import sinusoidal_table


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def check_one_hot_embedding(cls: type) -> None:
    """``cls(V, d)`` must hold one (V, d) ``weight`` and compute ``one_hot(ids) @ weight``."""
    mine = cls(10, 4)
    torch.manual_seed(0)
    ref = nn.Embedding(10, 4)
    names = sorted(name for name, _ in mine.named_parameters())
    if names != ["weight"]:
        raise _fail("the parameters of OneHotEmbedding(10, 4)", ["weight"], names,
                    "create exactly one nn.Parameter, self.weight, of shape (V, d)")  # fmt: skip
    mine.load_state_dict(ref.state_dict())  # the same numbers as nn.Embedding's table
    ids = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    out = mine(ids)
    expected = ref(ids)
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        raise _fail("shape of the output for ids of shape (2, 5)", _shape(expected), _shape(out),
                    "F.one_hot(ids, V) has shape (..., V); (..., V) @ (V, d) -> (..., d)")  # fmt: skip
    if not torch.allclose(out, expected, atol=1e-6):
        raise _fail("the vectors for ids[0]", expected[0].tolist(), out[0].tolist(),
                    "row i of weight belongs to id i; is the one-hot vector float?")  # fmt: skip
    # The gradient must reach the same rows as nn.Embedding's: the matrix view of learning.
    if not out.requires_grad:
        raise _fail("out.requires_grad (can training reach the table?)", True, False,
                    "compute the output from self.weight (an nn.Parameter), not from a "
                    "detached copy or under torch.no_grad()")  # fmt: skip
    out.sum().backward()
    expected.sum().backward()
    if mine.weight.grad is None or not torch.allclose(mine.weight.grad, ref.weight.grad):
        raise _fail("weight.grad after out.sum().backward()", ref.weight.grad.tolist(),
                    None if mine.weight.grad is None else mine.weight.grad.tolist(),
                    "compute the output from self.weight (an nn.Parameter), not from a copy")  # fmt: skip
    print("OneHotEmbedding: same vectors and same gradients as nn.Embedding. Correct!")


def check_token_and_position_embedding(cls: type) -> None:
    """Your module, loaded with a buildlm GPT's tables, must give what its first block receives."""
    config = ModelConfig(vocab_size=100, context_length=12, d_model=8, n_layers=1, n_heads=2)
    mine = cls(config.vocab_size, config.context_length, config.d_model)
    torch.manual_seed(0)
    gpt = GPT(config).eval()
    expected_names = ["pos_emb.weight", "tok_emb.weight"]
    names = sorted(mine.state_dict())
    if names != expected_names:
        raise _fail("the state_dict keys of your module", expected_names, names,
                    "name the tables self.tok_emb = nn.Embedding(V, d) and "
                    "self.pos_emb = nn.Embedding(context_length, d)")  # fmt: skip
    mine.load_state_dict(
        {"tok_emb.weight": gpt.tok_emb.weight, "pos_emb.weight": gpt.pos_emb.weight}
    )
    seen: dict[str, torch.Tensor] = {}
    hook = gpt.drop.register_forward_hook(lambda m, i, o: seen.update(x=o))
    for batch, t in [(3, 7), (1, config.context_length), (2, 1)]:
        ids = torch.randint(0, config.vocab_size, (batch, t), generator=torch.Generator().manual_seed(t))
        with torch.no_grad():
            gpt(ids)
            out = mine(ids)
        if not isinstance(out, torch.Tensor) or out.shape != seen["x"].shape:
            raise _fail(f"shape of the output for ids of shape {(batch, t)}", _shape(seen["x"]),
                        _shape(out), "(B, T, d) token vectors + (T, d) position vectors")  # fmt: skip
        if not torch.allclose(out, seen["x"], atol=1e-6):
            raise _fail(f"the vectors of sequence 0 (T = {t})", seen["x"][0, :, :3].tolist(),
                        out[0, :, :3].tolist(),
                        "position p adds row p of pos_emb: pos_emb(torch.arange(T))")  # fmt: skip
    hook.remove()
    print("TokenAndPositionEmbedding: equal to the input of buildlm's first block. Correct!")


def check_sinusoidal(fn) -> None:
    """``fn(n_positions, d)`` must equal buildlm's ``sinusoidal_table``."""
    out = fn(50, 16)
    expected = sinusoidal_table(50, 16)
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        raise _fail("shape of sinusoidal(50, 16)", _shape(expected), _shape(out),
                    "one row per position, one column per dimension")  # fmt: skip
    first = torch.tensor([0.0, 1.0, 0.0, 1.0])
    if not torch.allclose(fn(7, 4)[0], first):
        raise _fail("row 0 of sinusoidal(7, 4)", first.tolist(), fn(7, 4)[0].tolist(),
                    "sin(0) = 0 in the even columns, cos(0) = 1 in the odd ones")  # fmt: skip
    if not torch.allclose(out, expected, atol=1e-5):
        row = int((out - expected).abs().amax(dim=1).argmax())
        raise _fail(f"row {row} of sinusoidal(50, 16)", expected[row, :6].tolist(),
                    out[row, :6].tolist(),
                    "column 2i and 2i+1 share the angle p / 10000**(2i / d)")  # fmt: skip
    print("sinusoidal: equal to buildlm's sinusoidal_table. Correct!")
