"""mlp="relu2": the squared-ReLU MLP against PyTorch and transformers, its config, and learning."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import NemotronConfig
from transformers.activations import ACT2FN
from transformers.models.nemotron.modeling_nemotron import NemotronMLP

from buildlm.checkpoint_format import load_checkpoint
from buildlm.model import GPT, ModelConfig
from buildlm.model.mlp import ReluSquaredMLP, make_mlp
from buildlm.train.checkpoint import save_checkpoint

SMALL = dict(vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4)


def _randomised(bias: bool) -> ReluSquaredMLP:
    torch.manual_seed(0)
    mlp = ReluSquaredMLP(16, 48, bias=bias)
    with torch.no_grad():
        for p in mlp.parameters():
            p.normal_()  # unit weights: large activations on both sides of the kink
    return mlp


@pytest.mark.parametrize("bias", [False, True])
def test_relu2_mlp_equals_relu_squared_between_two_linears(bias):
    ours = _randomised(bias)
    up, down = nn.Linear(16, 48, bias=bias), nn.Linear(48, 16, bias=bias)
    up.load_state_dict(ours.up.state_dict())
    down.load_state_dict(ours.down.state_dict())
    x = torch.randn(3, 7, 16)
    pre = up(x)
    assert (pre < 0).any() and (pre > 0).any()  # the test sees both sides of relu
    torch.testing.assert_close(ours(x), down(F.relu(pre) ** 2))
    torch.testing.assert_close(ours(x), down(ACT2FN["relu2"](pre)))  # transformers' relu2
    # the same activation is not GELU: a GeLU MLP on these weights gives something else
    assert not torch.allclose(ours(x), down(F.gelu(pre, approximate="tanh")))


@pytest.mark.parametrize("bias", [False, True])
def test_relu2_mlp_equals_transformers_nemotron_mlp(bias):
    ours = _randomised(bias)
    config = NemotronConfig(hidden_size=16, intermediate_size=48, hidden_act="relu2", mlp_bias=bias)
    ref = NemotronMLP(config)
    ref.load_state_dict({f"{k.split('.')[0]}_proj.{k.split('.')[1]}": v
                         for k, v in ours.state_dict().items()})  # up -> up_proj, down -> down_proj
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours(x), ref(x))


def test_relu2_config_width_and_choices():
    cfg = ModelConfig(**SMALL, mlp="relu2")
    assert cfg.d_ff == 4 * 32  # GPT-2's rule: two matrices, no 2/3 shrink as for SwiGLU
    assert ModelConfig(**SMALL, mlp="relu2", d_ff=40).d_ff == 40
    mlp = GPT(cfg).blocks[0].mlp
    assert isinstance(mlp, ReluSquaredMLP) and not hasattr(mlp, "gate")
    assert mlp.up.bias is not None  # bias follows the config, as for GELU (bias=True default)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="choose 'gelu', 'swiglu', 'geglu' or 'relu2'"):
        make_mlp("relu3", 8, 16, False, 0.0)
    with pytest.raises(ValueError, match="relu2"):
        ModelConfig(**SMALL, mlp="reglu")  # the error lists the choices, relu2 among them


def test_relu2_is_refused_for_mixture_of_experts():
    with pytest.raises(ValueError, match="SwiGLU or GELU experts, not mlp='relu2'; set mlp="):
        ModelConfig(**SMALL, mlp="relu2", n_experts=4)


def test_relu2_flops_per_token_matches_torch_flop_counter():
    model = GPT(ModelConfig(**SMALL, mlp="relu2", attention="manual"))  # CPU SDPA: no formula
    idx = torch.randint(0, 50, (3, 16))
    counter = FlopCounterMode(display=False)
    with counter:
        model(idx).sum().backward()
    assert counter.get_total_flops() / idx.numel() == model.flops_per_token(16)


def test_relu2_residual_projection_is_scaled_at_init():
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**SMALL, "d_model": 256, "n_layers": 8}, mlp="relu2"))
    std = model.blocks[3].mlp.down.weight.std().item()
    assert std == pytest.approx(0.02 / (2 * 8) ** 0.5, rel=0.05)
    assert model.blocks[3].mlp.up.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_tiny_relu2_model_learns_and_round_trips_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(**{**SMALL, "context_length": 32}, mlp="relu2", position="rope")
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randint(0, 50, (4, 33))
    x, y = data[:, :-1], data[:, 1:]
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 3.5  # ~ln(50) at the start
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    folder = save_checkpoint(tmp_path / "run", 60, model, {"model": config.to_dict()})
    back = load_checkpoint(folder).model
    assert back.config.mlp == "relu2"
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
