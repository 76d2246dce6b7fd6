"""Inference-time scaling (`buildlm eval answers`): pass@k, majority@k, greedy, end to end.

The estimators are checked against brute force over every subset of samples; the command runs
on a tiny model half-taught to add (so some samples are right and some wrong).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from types import SimpleNamespace

import pytest
import torch

from buildlm.data.records import read_records
from buildlm.eval.answer_items import answer_items, answer_records
from buildlm.eval.best_of_n import SamplingConfig, best_of_n_eval, sample_answers, sample_seed
from buildlm.eval.exact_match import exact_match_eval
from buildlm.eval.pass_at_k import k_values, majority_at_k, majority_vote, pass_at_k
from buildlm.eval.verifiers import verifier_for
from buildlm.infer.load import load_model

# --- the estimators ---------------------------------------------------------------------------


def brute_pass_at_k(correct: list[bool], k: int) -> float:
    """The share of k-subsets of the samples holding a correct one (every subset enumerated)."""
    subsets = list(itertools.combinations(correct, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_equals_brute_force_over_subsets(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
        for k, value in zip(range(1, n + 1), values, strict=True):
            assert value == pytest.approx(brute_pass_at_k(correct, k), abs=1e-12), (n, c, k)
        assert values == sorted(values)  # monotone in k
        assert values[0] == pytest.approx(c / n)


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(4, 5, 1), (4, 2, 0), (4, 2, 5), (3, -1, 1)]:
        with pytest.raises(ValueError, match="pass@k needs"):
            pass_at_k(n, c, k)


def test_majority_vote():
    assert majority_vote(["7", None, "5", "7", None, None]) == "7"  # no answer is no vote
    assert majority_vote(["5", "7", "7", "5"]) == "5"  # a tie: the earliest given wins
    assert majority_vote([None, None]) is None and majority_vote([]) is None


def test_majority_at_k_groups_and_equals_pass_at_1_for_k_1():
    answers = ["1", "2", "1", "1", None, "2", "2", "3"]
    correct = [a == "1" for a in answers]
    assert majority_at_k(answers, correct, 1) == pytest.approx(pass_at_k(8, 3, 1)) == 3 / 8
    # groups of 2: (1,2) -> 1 right, (1,1) right, (None,2) wrong, (2,3) wrong
    assert majority_at_k(answers, correct, 2) == 0.5
    assert majority_at_k(answers, correct, 8) == 1.0  # "1" and "2" tie at 3: "1" came first
    assert majority_at_k(answers[1:], correct[1:], 7) == 0.0  # now "2" leads
    with pytest.raises(ValueError, match="majority@k needs"):
        majority_at_k(answers, correct, 9)


def test_k_values():
    assert k_values(1) == [1] and k_values(8) == [1, 2, 4, 8] and k_values(6) == [1, 2, 4, 6]


def test_sample_seeds_are_fixed_and_distinct():
    digest = hashlib.blake2b(b"0/3/1", digest_size=8).digest()
    assert (
        sample_seed(0, 3, 1) == int.from_bytes(digest, "little") >> 1
    )  # the same on every machine
    seeds = {sample_seed(s, i, j) for s in range(3) for i in range(20) for j in range(8)}
    assert len(seeds) == 3 * 20 * 8 and all(0 <= x < 2**63 for x in seeds)


# --- a tiny model half-taught to add --------------------------------------------------------------

SUMS = [(a, b) for a in range(1, 6) for b in range(1, 4)]  # 15 questions
TEMPLATE = "Q: {question}\nA: "


@pytest.fixture(scope="module")
def adder(tmp_path_factory, tokenizer) -> SimpleNamespace:
    """A checkpoint trained briefly on "Q: a+b\\nA: a+b's value" (it gets some right), and the data."""
    from buildlm.model import GPT, ModelConfig
    from buildlm.train.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("adder")
    data = folder / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"{a}+{b}", "answer": f"{a}+{b}=\n#### {a + b}"}) + "\n"
            for a, b in SUMS
        )
    )
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=tokenizer.vocab_size, context_length=32, d_model=32, n_layers=1
    )
    model = GPT(config)
    eot = tokenizer.eot_token
    rows = [
        [eot] + tokenizer.encode(TEMPLATE.format(question=f"{a}+{b}") + str(a + b)) + [eot]
        for a, b in SUMS
    ]
    width = max(map(len, rows))
    idx = torch.tensor([r + [eot] * (width - len(r)) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(
            model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    ckpt = save_checkpoint(
        folder / "run", 40, model.eval(), {"model": config.to_dict()}, tokenizer=tokenizer
    )
    return SimpleNamespace(path=ckpt, data=data)


def _eval(adder, samples=8, seed=0, batch_size=64, temperature=1.0):
    model, tokenizer = load_model(adder.path)
    items = answer_items(answer_records(str(adder.data)), TEMPLATE, tokenizer)
    config = SamplingConfig(
        samples, temperature, seed=seed, max_new_tokens=6, batch_size=batch_size
    )
    return best_of_n_eval(model, tokenizer, items, verifier_for("numeric"), config)


def test_best_of_n_end_to_end(adder):
    report, rows = _eval(adder)
    assert report["n"] == len(SUMS) and report["samples"] == 8
    assert [e["k"] for e in report["by_k"]] == [1, 2, 4, 8]
    passes = [e["pass@k"] for e in report["by_k"]]
    assert passes == sorted(passes) and 0 < passes[0] < passes[-1] < 1  # some right, some wrong
    assert report["by_k"][0]["majority@k"] == pytest.approx(passes[0])  # majority@1 = pass@1
    for row, (a, b) in zip(rows, SUMS, strict=True):
        assert len(row["samples"]) == 8
        # each row's numbers follow from its own verdicts, recomputed by brute force
        assert row["correct"] == [p is not None and float(p) == a + b for p in row["parsed"]]
        for k in (1, 2, 4, 8):
            assert row["pass@k"][k] == pytest.approx(brute_pass_at_k(row["correct"], k))
        assert row["vote"] == majority_vote(row["parsed"])
        assert row["vote_correct"] == (row["vote"] is not None and float(row["vote"]) == a + b)
    assert report["by_k"][-1]["majority@k"] == pytest.approx(
        sum(r["vote_correct"] for r in rows) / len(rows)
    )


def test_greedy_column_matches_exact_match_eval(adder):
    """Greedy answers scored by the exact verifier equal `exact_match_eval` on the same items."""
    model, tokenizer = load_model(adder.path)
    records = read_records(adder.data)
    for r in records:  # the bare sum as the expected answer
        r.data["answer"] = r.data["answer"].split("#### ")[1]
    items = answer_items(records, TEMPLATE, tokenizer)
    scores, em_rows = exact_match_eval(model, tokenizer, items, max_new_tokens=6)
    config = SamplingConfig(1, max_new_tokens=6)
    report, rows = best_of_n_eval(model, tokenizer, items, verifier_for("exact"), config)
    assert [r["greedy"] for r in rows] == [r["generated"] for r in em_rows]
    assert [r["greedy_correct"] for r in rows] == [r["correct"] for r in em_rows]
    assert report["greedy"] == scores["exact_match"] > 0


def test_seeds_make_sampling_repeatable(adder):
    model, tokenizer = load_model(adder.path)
    items = answer_items(answer_records(str(adder.data)), TEMPLATE, tokenizer)[:6]
    base = SamplingConfig(4, 1.5, max_new_tokens=6)
    first = sample_answers(model, tokenizer, items, base)
    assert sample_answers(model, tokenizer, items, base) == first
    other = sample_answers(
        model, tokenizer, items, SamplingConfig(4, 1.5, seed=1, max_new_tokens=6)
    )
    assert other != first
    assert any(len(set(s)) > 1 for s in first)  # the samples of a question differ


def test_sampling_config_errors():
    with pytest.raises(ValueError, match="temperature above 0"):
        SamplingConfig(4, 0.0)
    with pytest.raises(ValueError, match="unknown vote 'mean'"):
        SamplingConfig(vote="mean")
    with pytest.raises(ValueError, match="at least 1"):
        SamplingConfig(0)


# --- data and the command ---------------------------------------------------------------------


def test_answer_records_of_bundled_sets_and_files(tmp_path):
    records = answer_records("instruct-tasks:add,parity", "val")
    assert len(records) == 60 and {r.data["task"] for r in records} == {"add", "parity"}
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        answer_records("instruct-tasks", "dev")
    with pytest.raises(ValueError, match="no answers to check"):
        answer_records("shakespeare-plays")


def run_here(capsys, *args) -> tuple[int, str, str]:
    from buildlm.cli import main

    try:
        main(["eval", "answers", *map(str, args)])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_answers_command(adder, tmp_path, capsys):
    args = ("--model", adder.path, "--data", adder.data, "--template", TEMPLATE, "--verifier", "numeric",
            "--samples", 4, "--max-new-tokens", 6, "--device", "cpu", "--seed", 3)  # fmt: skip
    code, stdout, stderr = run_here(capsys, *args, "--json", "--out", tmp_path / "r.json",
                                    "--generations", tmp_path / "g.jsonl")  # fmt: skip
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report == json.loads((tmp_path / "r.json").read_text())
    assert [e["k"] for e in report["by_k"]] == [1, 2, 4] and report["verifier"] == "numeric"
    assert len((tmp_path / "g.jsonl").read_text().splitlines()) == len(SUMS)
    code, text, stderr = run_here(capsys, *args)
    assert code == 0, stderr
    assert "pass@k  majority@k" in text and f"{report['by_k'][-1]['pass@k']:.1%}" in text


@pytest.mark.parametrize(
    "extra,message",
    [
        (("--verifier", "bogus"), "unknown verifier 'bogus'"),
        (("--verifier", "exact", "--temperature", "0", "--samples", "2"), "temperature above 0"),
        (("--verifier", "exact", "--samples", "0"), "--samples must be at least 1"),
        (("--verifier", "exact", "--template", "{nope}"), "uses the field 'nope'"),
        ((), "name the verifier"),
    ],
)
def test_answers_command_errors(adder, capsys, extra, message):
    code, _, stderr = run_here(
        capsys, "--model", adder.path, "--data", adder.data, "--device", "cpu", *extra
    )
    assert code == 1, stderr
    stderr = "".join(line for line in stderr.splitlines(True) if not line.startswith("device: "))
    assert stderr.count("\n") == 1 and message in stderr
