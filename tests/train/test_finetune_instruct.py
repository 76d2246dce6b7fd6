"""Instruction tuning: exact match rises, LoRA runs save an adapter and load merged."""

import json

import torch

from buildlm.finetune.instruct import InstructConfig, run_instruct
from buildlm.finetune.run import FinetuneData
from buildlm.model.lora import LoRAConfig, LoRALinear

SHORT = "{instruction} {input} ="  # a short prompt: the tiny test model has a 128-token context


def test_sft_raises_exact_match_on_a_bundled_subtask(tiny_base, ft_train, tmp_path):
    out = tmp_path / "sft"
    result = run_instruct(
        str(tiny_base),
        FinetuneData(data="instruct-tasks:count"),
        ft_train(max_steps=60),
        InstructConfig(template=SHORT, max_new_tokens=3),
        LoRAConfig(),
        out=str(out),
        log=lambda m: None,
    )
    before, after = result.metrics["before"], result.metrics["after"]
    assert before["n"] == after["n"] == 50
    # Letter counts are one-token answers: the model first learns the format and the most
    # common count (52% of the test answers), the same for training seeds 0 to 3.
    assert before["exact_match"] < 0.1 and after["exact_match"] >= 0.3, (before, after)
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 50 and sum(r["correct"] for r in rows) / 50 == after["exact_match"]
    assert {r["expected"] for r in rows} <= {"0", "1", "2", "3"}
    assert (out / "generations_before.jsonl").is_file()


def test_lora_sft_saves_an_adapter_and_loads_as_a_merged_gpt(tiny_base, ft_train, tmp_path):
    from buildlm import checkpoint_format
    from buildlm.infer.load import load_model
    from buildlm.model.lora import load_lora

    out = tmp_path / "lora"
    lora = LoRAConfig(rank=4, alpha=8, targets=["attn.qkv", "attn.proj"])
    result = run_instruct(
        str(tiny_base),
        FinetuneData(data="instruct-tasks:parity", max_train_examples=64),
        ft_train(max_steps=6, lr=1e-2),
        InstructConfig(template=SHORT, max_new_tokens=2, eval_before=False, max_eval_examples=8),
        lora,
        out=str(out),
        log=lambda m: None,
    )
    config = checkpoint_format.read_config(result.checkpoint)
    assert config["lora"]["rank"] == 4 and config["finetune"]["task"] == "instruct"
    merged, tokenizer = load_model(out)
    assert tokenizer is not None and not any(isinstance(m, LoRALinear) for m in merged.modules())
    base, _ = load_model(tiny_base)
    ids = torch.tensor([tokenizer.encode("Is the number even or odd? 12 =")])
    assert not torch.allclose(merged(ids), base(ids), atol=1e-4)  # the adapter changed something
    load_lora(base, out / "adapter.safetensors")  # the adapter alone, on the base, is the same model
    torch.testing.assert_close(base.eval()(ids), merged(ids), rtol=1e-5, atol=1e-5)


def test_chat_examples_with_the_chatml_template(tiny_base, ft_train, tmp_path):
    from buildlm.data.bundled_tasks import load_bundled
    from buildlm.data.records import write_jsonl

    chats = [
        {"messages": [{"role": "user", "content": f"{x['instruction']} {x['input']}"}, {"role": "assistant", "content": x["output"]}]}
        for x in load_bundled("instruct-tasks:count")["train"][:40]
    ]
    path = write_jsonl(chats, tmp_path / "chats.jsonl")
    result = run_instruct(
        str(tiny_base), FinetuneData(data=str(path)), ft_train(max_steps=3),
        InstructConfig(template="chatml", max_new_tokens=4), LoRAConfig(), out=str(tmp_path / "chat"), log=lambda m: None,
    )  # fmt: skip
    assert result.metrics["after"]["n"] == 4  # 10% of 40 held out for the test
    rows = [json.loads(line) for line in (tmp_path / "chat" / "generations.jsonl").read_text().splitlines()]
    assert all("<|im_end|>" not in r["generated"] for r in rows)  # generation stops at the turn end
