"""The bundled arithmetic sets: fixed, disjoint, right; the tool result untrained in SFT."""

from __future__ import annotations

from fractions import Fraction

import pytest

from buildlm.data import bundled_tasks as bt
from buildlm.data.instruct import IGNORE, encode_rendered, prompt_ids, render
from buildlm.data.records import Record


def exact(question: str) -> Fraction:
    """The question's value, computed here from its shape (never the calculator under test)."""
    if question.startswith("("):
        inner, _, c = question[1:].partition(") * ")
        a, b = inner.split(" + ")
        return (Fraction(a) + Fraction(b)) * Fraction(c)
    a, op, b = question.split(" ")
    a, b = Fraction(a), Fraction(b)
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]


def test_splits_are_fixed_disjoint_and_right():
    tools = bt.load_bundled("instruct-tools")
    arith = bt.load_bundled("instruct-arith:calc")
    assert {k: len(v) for k, v in tools.items()} == {"train": 5000, "val": 50, "test": 200}
    assert tools == bt.load_bundled("instruct-tools")  # regenerated: identical
    questions = {k: [x["input"] for x in v] for k, v in tools.items()}
    assert questions == {k: [x["input"] for x in v] for k, v in arith.items()}  # same questions
    seen = [set(q) for q in questions.values()]
    assert sum(map(len, seen)) == 5250 and len(set.union(*seen)) == 5250  # no question twice
    assert tools["test"][0]["input"] == "1040 / 80"  # pinned: the seed and the recipe are fixed
    for x, y in zip(tools["train"], arith["train"], strict=True):
        value = exact(x["input"])
        assert value.denominator == 1 and y["output"] == str(value)
        call = f"<tool>calculator: {x['input']}</tool><result>{value}</result>"
        assert x["output"] == f"{call} {value}"
        assert x["instruction"] == y["instruction"] == "Calculate." and x["task"] == "calc"
    kinds = {
        next(op for op in ("(", "+", "-", "*", "/") if op in x["input"]) for x in tools["test"]
    }
    assert kinds == {"(", "+", "-", "*", "/"}
    with pytest.raises(ValueError, match="unknown arithmetic task"):
        bt.load_bundled("instruct-tools:poetry")
    assert bt.BUNDLED["instruct-tools"] == bt.BUNDLED["instruct-arith"] == "instruct"


def test_the_tool_result_is_tokenized_alone_and_carries_no_loss(small_tokenizer):
    example = bt.load_bundled("instruct-tools")["train"][1]  # 246 * 55 = 13530
    rendered = render(Record(example, "mem:1"), "Q: {input}\nA: ")
    ids, labels, n_prompt = encode_rendered(rendered, small_tokenizer)
    assert n_prompt == len(prompt_ids(rendered, small_tokenizer))
    tok = small_tokenizer
    call = tok.encode("<tool>calculator: 246 * 55</tool>")
    result = tok.encode("<result>13530</result>")  # on its own, as the runtime encodes it
    answer = tok.encode(" 13530") + [tok.eot_token]
    assert ids[n_prompt:] == call + result + answer
    assert labels[n_prompt:] == call + [IGNORE] * len(result) + answer
    # A response without a call is trained whole, as before.
    plain = render(Record({"instruction": "Add.", "input": "2 + 3", "output": "5"}, "m"), "alpaca")
    ids, labels, n_prompt = encode_rendered(plain, tok)
    assert labels[n_prompt:] == ids[n_prompt:]
