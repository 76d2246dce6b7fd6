"""The fine-tuning code runs unchanged on a Hugging Face GPT-2 folder (random weights, offline)."""

import pytest
import torch

from buildlm.finetune.classify import ClassifyConfig, run_classify
from buildlm.finetune.dpo import DPOConfig, run_dpo
from buildlm.finetune.instruct import InstructConfig, run_instruct
from buildlm.finetune.run import FinetuneData
from buildlm.model.lora import LoRAConfig

transformers = pytest.importorskip("transformers")

SHORT = "{instruction} {input} ="


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory, plays_tokenizer):
    folder = tmp_path_factory.mktemp("hf-gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=plays_tokenizer.vocab_size, n_positions=128, n_embd=32, n_layer=2, n_head=2
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    plays_tokenizer.save_hf(folder / "tokenizer.json")
    return folder


def test_instruct_with_lora_on_hf_gpt2(hf_gpt2, ft_train, tmp_path):
    from buildlm.infer.load import load_model

    result = run_instruct(
        str(hf_gpt2), FinetuneData(data="instruct-tasks:add", max_train_examples=32), ft_train(max_steps=2),
        InstructConfig(template=SHORT, max_new_tokens=2, max_eval_examples=4), LoRAConfig(rank=2),
        out=str(tmp_path / "sft"), log=lambda m: None,
    )  # fmt: skip
    assert result.metrics["after"]["n"] == 4 and (tmp_path / "sft" / "adapter.safetensors").is_file()
    model, tokenizer = load_model(tmp_path / "sft")  # a buildlm checkpoint of the tuned GPT-2
    assert model.config.n_layers == 2 and tokenizer.vocab_size == model.config.vocab_size


def test_classify_and_dpo_on_hf_gpt2(hf_gpt2, ft_train, tmp_path):
    clf = run_classify(
        str(hf_gpt2), FinetuneData(data="shakespeare-plays:hamlet,macbeth", max_train_examples=32),
        ft_train(max_steps=2), ClassifyConfig(max_length=48, pooling="last"), LoRAConfig(),
        out=str(tmp_path / "clf"), log=lambda m: None,
    )  # fmt: skip
    assert clf.metrics["labels"] == ["hamlet", "macbeth"] and 0.0 <= clf.metrics["accuracy"] <= 1.0
    dpo = run_dpo(
        str(hf_gpt2), FinetuneData(data="instruct-prefs:parity", max_train_examples=32),
        ft_train(max_steps=2), DPOConfig(template=SHORT), LoRAConfig(),
        out=str(tmp_path / "dpo"), log=lambda m: None,
    )  # fmt: skip
    assert dpo.metrics["before"]["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert dpo.metrics["after"]["reward_margin"] != 0.0
