"""Instruction data: templates, the response-only loss mask, file errors, batching, bundled sets."""

import json

import pytest
import torch
import torch.nn.functional as F

from buildlm.data.batching import ExampleBatches
from buildlm.data.instruct import (
    ALPACA_PROMPT,
    IGNORE,
    SFTExample,
    collate_sft,
    encode_rendered,
    make_sft_examples,
    prompt_ids,
    render,
)
from buildlm.data.records import Record, read_records
from buildlm.tokenizer.chat_templates import chatml_prompt, llama3_prompt

ALPACA = Record({"instruction": "Add the two numbers.", "input": "2 + 3", "output": "5"}, "mem:1")
CHAT = Record(
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "2 + 3?"},
            {"role": "assistant", "content": "5"},
        ]
    },
    "mem:2",
)


def test_alpaca_template_with_and_without_input():
    r = render(ALPACA, "alpaca")
    assert r.prompt == [(ALPACA_PROMPT.format(instruction="Add the two numbers.", input="2 + 3"), False)]
    assert (r.response, r.answer, r.add_eot) == ("5", "5", True)
    no_input = render(Record({"instruction": "Say hi.", "output": "hi"}, "mem:3"), "alpaca")
    assert "### Input" not in no_input.prompt[0][0] and no_input.prompt[0][0].endswith("### Response:\n")


@pytest.mark.parametrize("name, fmt", [("chatml", chatml_prompt), ("llama3", llama3_prompt)])
def test_chat_templates_reproduce_the_hub_formats_and_train_only_assistant_turns(name, fmt):
    r = render(CHAT, name)
    messages = CHAT.data["messages"]
    assert "".join(t for t, _ in r.prompt) + r.response == fmt(messages)
    assert "".join(t for t, _ in r.prompt) == fmt(messages[:-1], add_generation_prompt=True)
    trained = [t for t, train in r.prompt if train]
    assert len(trained) == 1 and trained[0].startswith("Hello.")  # the earlier assistant turn
    assert all("Hi" not in t and "Be brief" not in t for t in trained)
    assert r.answer == "5"
    untrained_history = render(CHAT, name, train_history=False)
    assert not any(train for _, train in untrained_history.prompt)


def test_prompt_tokens_carry_no_loss(small_tokenizer):
    rendered = render(ALPACA, "alpaca")
    ids, labels, n_prompt = encode_rendered(rendered, small_tokenizer)
    assert n_prompt == len(prompt_ids(rendered, small_tokenizer))
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == small_tokenizer.eot_token  # the model learns to stop
    batch = collate_sft([SFTExample(ids, labels), SFTExample(ids[:-3], labels[:-3])])
    assert batch.x.shape == batch.y.shape == (2, len(ids) - 1)
    assert batch.y[0].tolist() == labels[1:]  # y is shifted by one: target t follows input t
    assert (batch.y[1, len(ids) - 4 :] == IGNORE).all()  # padding carries no loss


def test_sft_loss_ignores_prompt_positions_entirely(small_tokenizer):
    from buildlm.finetune.instruct import sft_loss

    ids, labels, n_prompt = encode_rendered(render(ALPACA, "alpaca"), small_tokenizer)
    batch = collate_sft([SFTExample(ids, labels)])
    torch.manual_seed(0)
    logits = torch.randn(1, batch.x.shape[1], small_tokenizer.vocab_size, requires_grad=True)
    loss = sft_loss(logits, batch.y)
    # A direct computation over the response positions only.
    positions = [t for t in range(batch.y.shape[1]) if batch.y[0, t] != IGNORE]
    assert positions == list(range(n_prompt - 1, len(ids) - 1))
    direct = torch.stack([F.cross_entropy(logits[0, t], batch.y[0, t]) for t in positions]).mean()
    torch.testing.assert_close(loss, direct)
    # Changing the logits at every prompt position changes nothing; the gradient there is zero.
    changed = logits.detach().clone()
    changed[0, : n_prompt - 1] += 10 * torch.randn_like(changed[0, : n_prompt - 1])
    torch.testing.assert_close(sft_loss(changed, batch.y), loss)
    loss.backward()
    assert float(logits.grad[0, : n_prompt - 1].abs().sum()) == 0.0
    assert float(logits.grad[0, n_prompt - 1 :].abs().sum()) > 0.0


def test_custom_template_and_missing_field_errors():
    r = render(ALPACA, "Q: {instruction} {input}\nA: ")
    assert r.prompt[0][0] == "Q: Add the two numbers. 2 + 3\nA: "
    with pytest.raises(ValueError, match=r"mem:1: the prompt template uses the field 'question'"):
        render(ALPACA, "Q: {question}\nA: ")
    with pytest.raises(ValueError, match="mem:4: the example has no 'output' field"):
        render(Record({"instruction": "x"}, "mem:4"), "alpaca")
    with pytest.raises(ValueError, match="unknown prompt template 'vicuna'"):
        render(ALPACA, "vicuna")
    with pytest.raises(ValueError, match="multi-turn"):
        render(CHAT, "alpaca")


def test_examples_whose_prompt_fills_the_window_are_skipped(small_tokenizer):
    rendered = [(render(ALPACA, "alpaca"), "a"), (render(Record({**ALPACA.data, "input": "9 " * 200}, "b"), "alpaca"), "b")]
    n_prompt = len(prompt_ids(rendered[0][0], small_tokenizer))
    examples, dropped = make_sft_examples(rendered, small_tokenizer, max_length=n_prompt + 1)
    assert dropped == 1 and [e.where for e in examples] == ["a"]
    assert len(examples[0].ids) == n_prompt + 2  # cut to max_length + 1: "5" kept, end-of-text cut
    assert examples[0].labels[-1] != IGNORE


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    good = json.dumps(ALPACA.data)
    path.write_text(f"{good}\n\n{good}\n{{\"instruction\": \"x\",\n")
    with pytest.raises(ValueError, match=r"data\.jsonl:4: malformed JSON"):
        read_records(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        read_records(path)
    path.write_text(f"{good}\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"data\.jsonl:2: each line must be a JSON object"):
        read_records(path)
    records = read_records(tmp_path.joinpath("ok.json").write_text(json.dumps([ALPACA.data] * 2)) and tmp_path / "ok.json")
    assert [r.where.split(":")[-1] for r in records] == ["example 0", "example 1"]


def test_length_bucketed_batches_cover_every_example_and_resume_exactly():
    lengths = [(i * 37) % 100 + 1 for i in range(200)]
    examples = list(range(200))
    stream = ExampleBatches(examples, list, 10, seed=3, lengths=lengths, bucket_batches=5)
    epoch = [stream.batch_at(k) for k in range(stream.num_batches)]
    assert sorted(i for b in epoch for i in b) == examples

    def spread(batches):
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)

    unbucketed = ExampleBatches(examples, list, 10, seed=3, lengths=lengths, bucket_batches=1)
    assert spread(epoch) < 25 < 60 < spread(unbucketed.epoch_batches())
    assert [stream.batch_at(k) for k in range(20, 40)] != epoch  # a new epoch, a new order
    for _ in range(7):
        next(stream)
    resumed = ExampleBatches(examples, list, 10, seed=3, lengths=lengths, bucket_batches=5)
    resumed.load_state_dict(stream.state_dict())
    assert next(resumed) == next(stream)
    with pytest.raises(ValueError, match="empty"):
        ExampleBatches([], list, 4)


def test_bundled_instruction_sets_are_deterministic_disjoint_and_correct():
    from buildlm.data import bundled_tasks as bt

    data = bt.load_bundled("instruct-tasks")
    assert {k: len(v) for k, v in data.items()} == {"train": 2100, "val": 210, "test": 350}
    assert data == bt.instruct_examples()  # regenerated: identical
    keys = {k: {(x["instruction"], x["input"]) for x in v} for k, v in data.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"]) and not (keys["val"] & keys["test"])
    for x in data["train"]:
        if x["task"] == "add":
            a, b = x["input"].split(" + ")
            assert int(x["output"]) == int(a) + int(b)
        elif x["task"] == "parity":
            assert x["output"] == ("even" if int(x["input"]) % 2 == 0 else "odd")
        elif x["task"] == "sort":
            assert x["output"].split() == sorted(x["input"].split())
        elif x["task"] == "reverse":
            assert x["output"].split() == x["input"].split()[::-1]
        elif x["task"] == "count":
            letter = x["instruction"].split('"')[1]
            assert int(x["output"]) == x["input"].count(letter)
        elif x["task"] == "speaker":
            assert x["input"].startswith(x["output"] + ": ")
    prefs = bt.load_bundled("instruct-prefs:add,speaker")
    assert {x["task"] for x in prefs["test"]} == {"add", "speaker"}
    assert all(x["chosen"] != x["rejected"] for v in prefs.values() for x in v)
    with pytest.raises(ValueError, match="unknown instruction task"):
        bt.load_bundled("instruct-tasks:poetry")
    with pytest.raises(ValueError, match="unknown bundled dataset"):
        bt.load_bundled("imdb")
