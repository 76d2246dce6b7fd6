"""LoRA: only adapters train, B = 0 changes nothing, merging is exact, adapters round-trip."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from buildlm.model import GPT, ModelConfig
from buildlm.model.lora import (
    LoRAConfig,
    LoRALinear,
    count_parameters,
    inject_lora,
    load_lora,
    lora_disabled,
    lora_modules,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    read_lora_config,
    remove_lora,
    save_lora,
    unmerge_lora,
)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = dict(vocab_size=97, context_length=32, d_model=32, n_layers=2, n_heads=4)
    return GPT(ModelConfig.preset("tiny", **{**config, **overrides})).eval()


def randomize_b(model: nn.Module, seed: int = 1) -> None:
    """Give every B a non-zero value (trained adapters are not zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_modules(model):
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)


IDS = torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(5))


def test_zero_b_at_init_leaves_outputs_unchanged():
    model = tiny_gpt()
    before = model(IDS)
    names = inject_lora(model, rank=4, alpha=8, targets=("attn.qkv", "attn.proj"))
    assert names == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv", "blocks.1.attn.proj"]
    assert all(float(m.lora_A.detach().abs().sum()) > 0 for _, m in lora_modules(model))  # A is random
    torch.testing.assert_close(model(IDS), before, rtol=0, atol=0)


def test_only_adapter_parameters_receive_gradients():
    model = tiny_gpt().train()
    inject_lora(model, rank=4, alpha=8, targets=("attn.qkv", "mlp.fc"))
    randomize_b(model)  # with B = 0 the gradient of A is zero: make both non-trivial
    n_trainable = mark_only_lora_trainable(model)
    logits = model(IDS[:, :-1])
    F.cross_entropy(logits.reshape(-1, 97), IDS[:, 1:].reshape(-1)).backward()
    with_grad = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    expected = sorted(f"blocks.{i}.{m}.lora_{x}" for i in range(2) for m in ("attn.qkv", "mlp.fc") for x in "AB")
    assert with_grad == expected
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters() if p.grad is not None)
    # r * (in + out) per adapted layer: qkv 32 -> 96, fc 32 -> 128.
    assert n_trainable == 2 * (4 * (32 + 96) + 4 * (32 + 128))
    assert count_parameters(model)[0] == n_trainable


def test_merged_logits_equal_unmerged_and_unmerge_restores_weights():
    model = tiny_gpt()
    base_weight = model.blocks[0].attn.qkv.weight.detach().clone()
    inject_lora(model, rank=4, alpha=8)
    randomize_b(model)
    unmerged = model(IDS)
    merge_lora(model)
    assert all(m.merged for _, m in lora_modules(model))
    assert not torch.equal(model.blocks[0].attn.qkv.weight, base_weight)
    torch.testing.assert_close(model(IDS), unmerged, rtol=1e-5, atol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, base_weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(model(IDS), unmerged, rtol=1e-5, atol=1e-5)


def test_remove_lora_gives_a_plain_model_with_the_same_outputs():
    model = tiny_gpt()
    inject_lora(model, rank=4, alpha=8)
    randomize_b(model)
    expected = model(IDS)
    remove_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(tiny_gpt().state_dict())
    torch.testing.assert_close(model(IDS), expected, rtol=1e-5, atol=1e-5)


def test_saved_adapter_reloads_onto_a_fresh_base(tmp_path):
    model = tiny_gpt()
    inject_lora(model, rank=4, alpha=8, dropout=0.1, targets=("attn.qkv", "attn.proj"))
    randomize_b(model)
    expected = model(IDS)
    path = save_lora(model, tmp_path / "adapter.safetensors")
    assert set(lora_state_dict(model)) == {f"blocks.{i}.attn.{m}.lora_{x}" for i in range(2) for m in ("qkv", "proj") for x in "AB"}
    config = read_lora_config(path)
    assert (config.rank, config.alpha, config.dropout) == (4, 8.0, 0.1)

    fresh = tiny_gpt()  # the same base weights (same seed), no adapters yet
    assert not torch.allclose(fresh(IDS), expected)
    load_lora(fresh, path)
    torch.testing.assert_close(fresh.eval()(IDS), expected, rtol=0, atol=1e-6)


def test_adapter_for_another_base_is_refused(tmp_path):
    model = tiny_gpt()
    inject_lora(model, rank=4, alpha=8)
    path = save_lora(model, tmp_path / "adapter.safetensors")
    with pytest.raises(ValueError, match="another base model"):
        load_lora(tiny_gpt(d_model=64), path)


def test_lora_disabled_runs_the_base_model():
    model = tiny_gpt()
    base = model(IDS)
    inject_lora(model, rank=4, alpha=8)
    randomize_b(model)
    with lora_disabled(model):
        torch.testing.assert_close(model(IDS), base, rtol=0, atol=0)
    assert not torch.allclose(model(IDS), base)


def test_bad_targets_and_settings_are_clear_errors():
    with pytest.raises(ValueError, match="no Linear layer matches"):
        inject_lora(tiny_gpt(), rank=4, targets=("attn.q_proj",))
    with pytest.raises(TypeError, match="collection"):
        inject_lora(tiny_gpt(), rank=4, targets="attn.qkv")
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(rank=-1)


def test_a_lora_checkpoint_loads_as_a_plain_merged_gpt(tmp_path):
    from buildlm import checkpoint_format
    from buildlm.train import checkpoint as ckpt

    model = tiny_gpt()
    lora = LoRAConfig(rank=4, alpha=8, targets=["attn.qkv"])
    inject_lora(model, lora.rank, lora.alpha, targets=lora.targets)
    randomize_b(model)
    expected = model(IDS)
    folder = ckpt.save_checkpoint(tmp_path, 1, model, {"model": model.config.to_dict(), "lora": lora.to_dict()})
    loaded = checkpoint_format.load_checkpoint(folder).model
    assert not any(isinstance(m, LoRALinear) for m in loaded.modules())
    torch.testing.assert_close(loaded(IDS), expected, rtol=1e-5, atol=1e-5)
