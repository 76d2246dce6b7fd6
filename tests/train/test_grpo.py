"""GRPO as a fine-tuning task: rollouts, log-probabilities, the first pass, the command, resuming."""

import csv
import json

import pytest
import torch

from buildlm.data.instruct import IGNORE
from buildlm.data.records import records_from_dicts
from buildlm.eval.verifiers import verifier_for
from buildlm.finetune.cli import main
from buildlm.finetune.grpo import GRPOConfig, GRPOTask
from buildlm.finetune.grpo_rollout import collate_rollout, make_prompts, token_logprobs
from buildlm.infer.requests import Completion

SHORT = "{instruction} {input} ="


@pytest.fixture
def tiny(tiny_base):
    from buildlm.infer.load import load_model

    torch.set_num_threads(1)
    return load_model(tiny_base, dtype=torch.float32)


def some_prompts(tokenizer, n=6):
    from buildlm.data.bundled_tasks import load_bundled

    records = records_from_dicts(load_bundled("instruct-tasks:add,parity")["train"][:n], "t")
    prompts, skipped = make_prompts(records, SHORT, tokenizer, 100)
    assert skipped == 0 and len(prompts) == n
    return prompts


def test_prompts_are_formatted_as_instruction_tuning_formats_them(tiny):
    from buildlm.data.instruct import prompt_ids, render

    _, tokenizer = tiny
    rows = [
        {"question": "What is 6 times 7?", "answer": "42"},
        {"instruction": "Add.", "input": "1 + 2", "output": "3"},
    ]
    prompts, _ = make_prompts(records_from_dicts(rows, "f"), "alpaca", tokenizer, 1000)
    sft = render(
        records_from_dicts([{"instruction": "What is 6 times 7?", "output": "42"}], "f")[0],
        "alpaca",
    )
    assert prompts[0].ids == prompt_ids(sft, tokenizer) and prompts[0].answer == "42"
    assert prompts[1].answer == "3" and prompts[1].text.endswith("### Response:\n")
    with pytest.raises(ValueError, match="'answer'"):
        make_prompts(records_from_dicts([{"question": "Hi?"}], "f"), "alpaca", tokenizer, 1000)


def test_collate_puts_targets_on_completion_tokens_only():
    from buildlm.finetune.grpo_rollout import GRPOPrompt

    prompts = [GRPOPrompt([5, 6, 7], "", "", [], []), GRPOPrompt([8], "", "", [], [])]
    groups = [
        [Completion([5, 6, 7], [1, 2], "", "stop", 0), Completion([5, 6, 7], [3], "", "length")],
        [Completion([8], [4, 4, 4], "", "stop", 9), Completion([8], [], "", "stop", 0)],
    ]
    x, y, lengths = collate_rollout(prompts, groups, pad_id=99, context_length=100)
    assert x.tolist() == [[5, 6, 7, 1, 2], [5, 6, 7, 99, 99], [8, 4, 4, 4, 99], [8, 99, 99, 99, 99]]
    I = IGNORE  # noqa: E741
    assert y.tolist() == [[I, I, 1, 2, 0], [I, I, 3, I, I], [4, 4, 4, 9, I], [0, I, I, I, I]]
    assert lengths.tolist() == [3, 1, 4, 1]


def test_token_logprobs_equal_a_full_forward_and_ignore_padding(tiny):
    model, _ = tiny
    torch.manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (3, 9))
    y = torch.full_like(x, IGNORE)
    y[0, 4:9] = torch.randint(0, 50, (5,))
    y[1, 2:5] = torch.randint(0, 50, (3,))
    y[2, 6:7] = 7
    with torch.no_grad():
        got = token_logprobs(model.eval(), x, y)
        full = (
            torch.log_softmax(model(x).float(), -1)
            .gather(-1, y.clamp(min=0).unsqueeze(-1))
            .squeeze(-1)
        )
        alone = token_logprobs(model, x[1:2, :5], y[1:2, :5])  # the row without its padding
    assert torch.allclose(got, torch.where(y != IGNORE, full, 0.0), atol=1e-5)
    assert torch.allclose(got[1, :5], alone[0], atol=1e-5) and (got[y == IGNORE] == 0).all()
    with torch.no_grad():  # sampled at temperature 0.5: the probabilities of that distribution
        cooled = token_logprobs(model, x, y, temperature=0.5)
        want = (
            torch.log_softmax(model(x).float() / 0.5, -1)
            .gather(-1, y.clamp(min=0).unsqueeze(-1))
            .squeeze(-1)
        )
    assert torch.allclose(cooled, torch.where(y != IGNORE, want, 0.0), atol=1e-5)


def test_first_pass_ratio_is_one_and_the_gradient_is_the_policy_gradient(tiny):
    model, tokenizer = tiny
    config = GRPOConfig(group_size=4, prompts_per_step=3, max_new_tokens=4, template=SHORT)
    verifier = verifier_for("exact", format_weight=1.0)
    task = GRPOTask(model, tokenizer, None, verifier, some_prompts(tokenizer), None, config, seed=3)
    model.train()
    batch = next(task.train_batches)
    assert batch.x.shape[0] == 12 and batch.advantages.abs().sum() > 0
    with torch.no_grad():  # the old log-probs: an independent forward pass over the samples
        independent = token_logprobs(model, batch.x, batch.y)
    loss = task.loss(model, batch)
    assert torch.equal(batch.old_logp, independent)  # ratio exactly 1
    assert task.step_metrics()["ratio"] == 1.0 and task.step_metrics()["clip_fraction"] == 0.0
    grads = torch.autograd.grad(loss, list(model.parameters()))
    logp = token_logprobs(model, batch.x, batch.y)
    plain = -(batch.advantages[:, None] * logp * batch.mask).sum() / batch.mask.sum()
    want = torch.autograd.grad(plain, list(model.parameters()))
    assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(grads, want, strict=True))
    # the samples are the policy's own: greedy sampling would not vary, these do
    assert len({tuple(r) for r in batch.x.tolist()}) > 3


def test_passes_reuse_a_rollout_then_sample_a_new_one(tiny):
    model, tokenizer = tiny
    config = GRPOConfig(
        group_size=2, prompts_per_step=2, max_new_tokens=3, passes_per_batch=2, template=SHORT
    )
    task = GRPOTask(model, tokenizer, None, verifier_for("exact"), some_prompts(tokenizer), None, config, seed=1,
                    grad_accum_steps=2)  # fmt: skip
    stream = task.train_batches
    first = [next(stream) for _ in range(4)]  # step 1: micro 0, 1; step 2: the same two again
    assert first[0] is first[2] and first[1] is first[3] and first[0] is not first[1]
    assert first[0].num_tokens == int(first[0].mask.sum() + first[1].mask.sum())
    assert next(stream) is not first[0]  # step 3 samples again


def run_cli(args):
    main(["grpo", *args])


def rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("reward")]


COMMON = [
    "--data", "instruct-tasks:add,parity", "--max_train_examples", "24", "--grpo.template", SHORT,
    "--grpo.group_size", "4", "--grpo.prompts_per_step", "2", "--grpo.max_new_tokens", "6",
    "--grpo.format_weight", "1.0", "--grpo.max_eval_examples", "4", "--grpo.max_test_examples", "4",
    "--grpo.passes_per_batch", "2", "--train.lr", "3e-3", "--train.min_lr", "3e-3", "--train.progress", "false",
    "--train.tensorboard", "false", "--train.num_threads", "1", "--train.peak_flops", "1e12",
    "--train.eval_interval", "1000", "--train.checkpoint_interval", "3", "--train.keep_checkpoints", "3",
]  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [[], ["--lora.rank", "2", "--grpo.beta", "0.1", "--train.grad_accum_steps", "2"]],
    ids=["full", "lora-kl"],
)
def test_command_checkpoints_and_resumes_exactly(tiny_base, tmp_path, extra):
    whole, part = tmp_path / "whole", tmp_path / "part"
    run_cli(
        ["--model", str(tiny_base), "--out", str(whole), "--train.max_steps", "5", *COMMON, *extra]
    )
    run_cli(
        ["--model", str(tiny_base), "--out", str(part), "--train.max_steps", "3", *COMMON, *extra]
    )
    run_cli(
        ["--resume", str(part), "--train.max_steps", "5"]
    )  # resumes between two passes over a rollout
    a, b = rows(whole), rows(part)
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["1", "2", "3", "4", "5"]
    for key in ("train_loss", "reward", "accuracy", "kl", "clip_fraction", "completion_length"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert any(float(r["clip_fraction"]) > 0 for r in a)  # the second pass moved the policy
    assert (float(a[0]["kl"]) >= 0) and (float(a[-1]["kl"]) > 0) == bool(extra)
    assert (whole / "samples.jsonl").read_text() == (part / "samples.jsonl").read_text()
    assert (
        json.loads((whole / "eval.json").read_text())["after"]
        == json.loads((part / "eval.json").read_text())["after"]
    )
    if extra:
        assert (part / "adapter.safetensors").is_file()


def test_command_runs_unchanged_on_a_hugging_face_qwen3_folder(plays_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "qwen3"
    torch.manual_seed(0)
    config = transformers.Qwen3Config(
        vocab_size=plays_tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128, tie_word_embeddings=True,
    )  # fmt: skip
    transformers.Qwen3ForCausalLM(config).save_pretrained(folder)
    plays_tokenizer.save_hf(folder / "tokenizer.json")
    out = tmp_path / "run"
    run_cli(["--model", str(folder), "--out", str(out), "--train.max_steps", "2", *COMMON])
    assert (
        len(rows(out)) == 2
        and (out / "checkpoints" / "step-0000002" / "model.safetensors").is_file()
    )


def test_a_tool_in_the_loop_is_run_and_its_result_carries_no_loss():
    """Rollouts with tools=["calculator"]: the model (a real GPT scripted to write a call) gets
    the result fed back; the verifier judges the final answer; the fed tokens are no targets."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from buildlm.finetune.grpo_rollout import GRPOPrompt, sample_completions
    from buildlm.infer import Engine
    from scripted_model import byte_tokenizer, script_after, scripted_model, text_ids

    prompt, call, result = "Q: 23*58\nA: ", "<tool>calculator: 23*58</tool>", "<result>1334</result>"
    said = call + "x" * len(result) + " 1334"  # what the model writes where the result goes
    script = script_after(prompt, text_ids(said) + [256])
    engine = Engine(scripted_model(script), byte_tokenizer())
    grpo_prompt = GRPOPrompt(text_ids(prompt), prompt, call + result + "1334", [], [256])
    (group,) = sample_completions(engine, [grpo_prompt], 2, 80, 1.0, None, seed=0, tools=("calculator",))
    assert [c.text for c in group] == [call + result + " 1334"] * 2
    fed = list(range(len(call), len(call) + len(result)))
    assert all(c.inserted == fed for c in group)
    verdict = verifier_for("exact").score(prompt, group[0].text, grpo_prompt.answer)
    assert verdict.correct
    _, y, _ = collate_rollout([grpo_prompt], [group], pad_id=0, context_length=128)
    start = len(grpo_prompt.ids) - 1  # the target of completion token j sits at start + j
    completion = text_ids(call + result + " 1334") + [256]
    expected = [IGNORE if j in fed else t for j, t in enumerate(completion)]
    assert y[0, start : start + len(completion)].tolist() == expected
    (plain,) = sample_completions(engine, [grpo_prompt], 1, 80, 1.0, None, seed=0)
    assert plain[0].inserted == [] and not verifier_for("exact").score(prompt, plain[0].text, grpo_prompt.answer).correct
    assert GRPOConfig(tools=["calculator"]).tools == ["calculator"]
    with pytest.raises(ValueError, match="unknown tool"):
        GRPOConfig(tools=["shell"])
