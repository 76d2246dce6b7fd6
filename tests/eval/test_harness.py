"""The lm-evaluation-harness adapter, end to end on local custom tasks (no download).

Skipped only when ``lm_eval`` is not installed (the optional ``eval`` extra).
"""

from __future__ import annotations

import json
import math
import os

import pytest

pytest.importorskip("lm_eval")

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import buildlm.eval.harness  # noqa: E402, F401  (registers "buildlm")
from buildlm.eval.choice import score_choices  # noqa: E402
from buildlm.eval.perplexity import window_nats  # noqa: E402
from buildlm.infer.engine import Engine  # noqa: E402
from buildlm.infer.load import load_model  # noqa: E402

ROLLING_TEXTS = ["I had always thought Jack Gisburn rather a cheap genius.", "He laughed."]
GEN_PROMPTS = ["The cat sat on the", "He laughed and"]


def greedy(model, tokenizer, prompt: str, n: int, stop: str | None = None) -> str:
    """buildlm's own greedy continuation of ``prompt`` (ending at <|endoftext|>), cut at ``stop``."""
    text = Engine(model, tokenizer).generate([prompt], max_new_tokens=n, temperature=0)[0].text
    return text.split(stop)[0] if stop else text


def write_tasks(folder, items, gen_answers) -> None:
    gen = [{"context": c, "answer": a} for c, a in zip(GEN_PROMPTS, gen_answers, strict=True)]
    data = {
        "choice": [{"context": i.context, "endings": i.endings, "label": i.label} for i in items],
        "rolling": [{"text": t} for t in ROLLING_TEXTS],
        "gen": gen,
    }
    for name, rows in data.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = "dataset_path: json\ntest_split: test\n"
    (folder / "choice.yaml").write_text(
        f"task: buildlm_tiny_choice\n{common}"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'choice.jsonl'}\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{endings}}"\ndoc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    (folder / "rolling.yaml").write_text(
        f"task: buildlm_tiny_rolling\n{common}"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'rolling.jsonl'}\n"
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: bits_per_byte\n"
    )
    (folder / "gen.yaml").write_text(
        f"task: buildlm_tiny_gen\n{common}"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'gen.jsonl'}\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{context}}"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 6\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )


def test_simple_evaluate_runs_local_tasks(tmp_path, planted):
    model, tokenizer = load_model(planted.path)
    # the first answer is what greedy decoding writes (so exact match 1), the second is not
    answers = [greedy(model, tokenizer, GEN_PROMPTS[0], 6, "\n"), "not this"]
    write_tasks(tmp_path, planted.items, answers)
    results = lm_eval.simple_evaluate(
        model="buildlm",
        model_args=f"pretrained={planted.path},device=cpu",
        tasks=["buildlm_tiny_choice", "buildlm_tiny_rolling", "buildlm_tiny_gen"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        batch_size=4,
    )["results"]
    # multiple choice: lm-eval's acc / acc_norm are those of buildlm's own scorer (100 %)
    ours = score_choices(model, tokenizer, planted.items)
    assert results["buildlm_tiny_choice"]["acc,none"] == ours.acc == 1.0
    assert results["buildlm_tiny_choice"]["acc_norm,none"] == ours.acc_norm == 1.0
    # rolling: bits per byte from buildlm's sliding window, every token scored after <eot>
    nats = sum(
        window_nats(model, [tokenizer.eot_token] + tokenizer.encode(t))[0] for t in ROLLING_TEXTS
    )
    n_bytes = sum(len(t.encode()) for t in ROLLING_TEXTS)
    expected = nats / n_bytes / math.log(2)
    assert results["buildlm_tiny_rolling"]["bits_per_byte,none"] == pytest.approx(
        expected, rel=1e-4
    )
    # generation: the adapter returns buildlm's greedy text, so exactly one answer matches
    assert results["buildlm_tiny_gen"]["exact_match,none"] == 0.5


def test_generate_until_is_greedy_and_stops(planted):
    from buildlm.eval.harness import BuildlmLM
    from buildlm.eval.scoring import encode_pair, score_continuations

    lm = BuildlmLM.create_from_arg_string(f"pretrained={planted.path}", {"batch_size": 2})
    prompt = "I had always thought"
    full = greedy(lm.model, lm.tokenizer, prompt, 12)
    assert len(full.strip()) >= 3
    stop = full.strip()[len(full.strip()) // 2]  # a character from the middle of the text
    request = Instance("generate_until", {}, (prompt, {"until": [stop], "max_gen_toks": 12}), 0)
    (text,) = lm.generate_until([request])
    assert text == full.split(stop)[0] and stop not in text
    # loglikelihood: the same numbers as buildlm's own scorer
    pairs = [(prompt, " him a cheap genius."), ("He laughed", " and ran.")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)])
    ours = score_continuations(lm.model, [encode_pair(lm.tokenizer, *p) for p in pairs])
    assert got == [(s.logprob, s.is_greedy) for s in ours]
    assert all(ll < 0 for ll, _ in got)


def test_a_task_without_network_is_one_line_with_the_fix(tmp_path, planted):
    """Offline for real: an empty cache and the Hub switched off, so ``datasets`` cannot fetch
    hellaswag (and fails at once instead of waiting on the network)."""
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src"
    env = {
        **os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1",
        "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    }  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "buildlm", "eval", "harness", "--model", str(planted.path),
         "--tasks", "hellaswag", "--limit", "2"],
        capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    err = proc.stderr.strip()
    lines = [line for line in err.splitlines() if not line.startswith("device: ")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert "hellaswag" in err and "ConnectionError" in err
    assert "needs network access to the Hugging Face Hub, or a local dataset cache" in err
    assert "HF_DATASETS_OFFLINE=1 with a cached copy" in err
