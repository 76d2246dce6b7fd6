"""`buildlm generate --num-samples N` decodes batch after batch: samples arrive while later ones
are still to come, and memory does not grow with N (a hundred million is fine to ask)."""

import os
import subprocess
import sys
import threading

import pytest
import torch

from buildlm.infer.cli import SAMPLES_PER_BATCH
from buildlm.model import GPT, ModelConfig
from buildlm.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from buildlm.data.corpora import load_corpus
    from buildlm.tokenizer import Tokenizer

    tok = Tokenizer.train(load_corpus("the-verdict"), 300, progress=False)
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=32, d_model=32, n_layers=1))
    return save_checkpoint(tmp_path_factory.mktemp("run"), 1, model, {"model": model.config.to_dict()}, tokenizer=tok)


def test_a_hundred_million_samples_stream_batch_by_batch(checkpoint):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildlm", "generate", "--model", str(checkpoint), "--prompt", "I",
         "--max-new-tokens", "1", "--num-samples", "100000000", "--seed", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    watchdog = threading.Timer(240, proc.kill)  # old behaviour: nothing printed, memory grows
    watchdog.start()
    wanted = f"--- sample {SAMPLES_PER_BATCH + 2} ---"  # well into the second batch
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            if seen[-1] == wanted:
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    assert wanted in seen, proc.stderr.read()[-2000:]
    headers = [line for line in seen if line.startswith("--- sample ")]
    assert headers == [f"--- sample {i} ---" for i in range(1, SAMPLES_PER_BATCH + 3)]


def test_batches_give_the_same_samples_as_one_batch(checkpoint):
    """Sample i has seed + i whatever batch it falls in: 70 samples = 64 + 6 are repeatable."""
    args = [sys.executable, "-m", "buildlm", "generate", "--model", str(checkpoint), "--prompt", "I",
            "--max-new-tokens", "3", "--seed", "5", "--temperature", "1.0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    many = subprocess.run([*args, "--num-samples", "70"], capture_output=True, text=True, env=env, timeout=200)
    few = subprocess.run([*args, "--num-samples", "2"], capture_output=True, text=True, env=env, timeout=200)
    assert many.returncode == 0 and few.returncode == 0, many.stderr + few.stderr
    assert many.stdout.count("--- sample ") == 70
    assert many.stdout.startswith(few.stdout)
