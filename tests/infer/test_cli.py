"""`buildlm generate` and `buildlm chat` on a real checkpoint folder, in subprocesses."""

import os
import subprocess
import sys

import pytest
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, request):
    from buildlm.data.corpora import load_corpus
    from buildlm.tokenizer import Tokenizer

    tok = Tokenizer.train(load_corpus("the-verdict"), 300, progress=False)
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=64))
    run = tmp_path_factory.mktemp("run")
    return save_checkpoint(run, 1, model, {"model": model.config.to_dict()}, tokenizer=tok)


def run(*args, stdin=""):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "buildlm", *map(str, args)],
        input=stdin, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_generate_is_repeatable_with_a_seed(checkpoint):
    args = ["generate", "--model", checkpoint, "--prompt", "I had", "--max-new-tokens", "12"]
    first = run(*args, "--seed", "3", "--num-samples", "2", "--stats")
    again = run(*args, "--seed", "3", "--num-samples", "2")
    other = run(*args, "--seed", "4", "--num-samples", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout != other.stdout
    assert first.stdout.count("--- sample") == 2 and first.stdout.count("I had") == 2
    assert "[stats] prefill" in first.stderr and "tok/s" in first.stderr


def test_streamed_and_batched_generation_agree(checkpoint):
    args = ["generate", "--model", checkpoint, "--prompt", "She", "--max-new-tokens", "15"]
    streamed = run(*args, "--seed", "1")
    whole = run(*args, "--seed", "1", "--no-stream")
    assert streamed.returncode == whole.returncode == 0
    assert streamed.stdout == whole.stdout and streamed.stdout.startswith("She")


def test_chat_keeps_history_and_resets(checkpoint):
    args = ["chat", "--model", checkpoint, "--max-new-tokens", "8", "--temperature", "0"]
    proc = run(*args, stdin="Hello\nHello\n/reset\nHello\n/quit\nnever read\n")
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.splitlines()
    assert len(replies) == 3
    # After /reset the conversation is the same as the first turn, so greedy replies match;
    # the second reply saw a longer history.
    assert replies[2] == replies[0]
    assert "chat format: plain" in proc.stderr and "reset" in proc.stderr


def test_chat_refuses_a_message_too_long_for_the_context_and_goes_on(checkpoint):
    args = ["chat", "--model", checkpoint, "--max-new-tokens", "8", "--temperature", "0"]
    too_long = "I had always thought Jack Gisburn rather a cheap genius. " * 10  # > 64 tokens
    proc = run(*args, stdin=f"{too_long}\nHello\n")
    assert proc.returncode == 0, proc.stderr
    assert "(not sent: " in proc.stderr and "shorten the message" in proc.stderr
    assert len(proc.stdout.splitlines()) == 1  # the short message got its reply
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--temperature", "-1"], "temperature"),
        (["--top-p", "2"], "top_p"),
        (["--dtype", "fp64"], "fp64"),
    ],
)
def test_bad_flags_are_one_line_errors(checkpoint, args, fragment):
    proc = run("generate", "--model", checkpoint, *args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and fragment in proc.stderr
    assert len([line for line in proc.stderr.strip().splitlines() if not line.startswith("device: ")]) == 1


def test_missing_model_folder_is_one_line(tmp_path):
    proc = run("chat", "--model", tmp_path / "nope", stdin="hi\n")
    assert proc.returncode == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_a_prompt_longer_than_the_context_names_the_flag_that_keeps_its_end(checkpoint):
    long_prompt = "word " * 400
    proc = run("generate", "--model", str(checkpoint), "--prompt", long_prompt, "--max-new-tokens", "2")
    assert proc.returncode == 1
    assert "--truncate-prompt" in proc.stderr and "Traceback" not in proc.stderr
    assert "word" not in proc.stdout  # the refused prompt is not echoed before the error
    kept = run("generate", "--model", str(checkpoint), "--prompt", long_prompt, "--max-new-tokens",
               "2", "--truncate-prompt", "--temperature", "0")  # fmt: skip
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith(long_prompt)


def test_generate_with_a_draft_or_prompt_lookup_prints_the_plain_greedy_text(checkpoint, tmp_path):
    from buildlm.tokenizer import Tokenizer

    # The draft: a smaller random model saved with the same tokenizer.
    tok = Tokenizer.load(os.path.join(checkpoint, "tokenizer.json"))
    torch.manual_seed(1)
    small = GPT(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=64, n_layers=1))
    draft = save_checkpoint(tmp_path / "draft", 1, small, {"model": small.config.to_dict()}, tokenizer=tok)
    args = ["generate", "--model", checkpoint, "--prompt", "I had I had I had", "--max-new-tokens",
            "70", "--temperature", "0"]  # fmt: skip
    plain = run(*args)
    lookup = run(*args, "--prompt-lookup", "--stats")
    drafted = run(*args, "--draft", draft, "--draft-tokens", "3", "--no-stream")
    assert plain.returncode == lookup.returncode == drafted.returncode == 0, lookup.stderr + drafted.stderr
    assert plain.stdout == lookup.stdout == drafted.stdout  # 70 tokens: past the context, slid
    assert "drafted tokens accepted" in lookup.stderr
    both = run(*args, "--prompt-lookup", "--draft", draft)
    assert both.returncode != 0 and "pick one" in both.stderr


def device_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("device: ")]


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="auto picks the CPU only on a machine without CUDA and MPS")  # fmt: skip
def test_device_auto_runs_on_the_cpu_and_says_why_once(checkpoint):
    proc = run("generate", "--model", checkpoint, "--prompt", "I had", "--max-new-tokens", "4",
               "--device", "auto", "--temperature", "0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("I had") and len(proc.stdout) > len("I had")
    [line] = device_lines(proc.stderr)  # once, on stderr: stdout is the text alone
    assert line.startswith("device: cpu (auto: no CUDA device") and "no Apple MPS" in line
    assert "device: " not in proc.stdout


@pytest.mark.parametrize(
    "command, device, fragments",
    [
        ("generate", "cuda:3", ["--device 'cuda:3'", "use --device cpu or auto"]),
        ("chat", "mps", ["--device 'mps': no Apple MPS", "use --device cpu or auto"]),
    ],
)  # fmt: skip
def test_an_absent_device_is_a_one_line_error_before_loading(checkpoint, command, device, fragments):
    if (device.startswith("cuda") and torch.cuda.device_count() > 3) or (
        device == "mps" and torch.backends.mps.is_available()
    ):
        pytest.skip(f"{device} exists here")
    prompt = ["--prompt", "hi"] if command == "generate" else []
    proc = run(command, "--model", checkpoint, "--device", device, *prompt, stdin="hi\n")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not device_lines(proc.stderr)
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"buildlm {command}: error: ")
    assert all(f in line for f in fragments), line
