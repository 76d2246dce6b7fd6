"""The tool-call format: finding calls, running them, cutting results out, final answers."""

from __future__ import annotations

import pytest

from buildlm.eval.exact_match import exact_match
from buildlm.tools.calls import (
    TOOLS,
    ToolCall,
    call_and_result,
    check_tools,
    final_answer,
    find_call,
    run_call,
    split_results,
)


def test_find_call():
    text = "so <tool>calculator: 2 + 2</tool> then <tool>calculator: 3</tool>"
    first = find_call(text)
    assert first == ToolCall("calculator", "2 + 2", text.index(" then"))
    assert find_call(text, first.end) == ToolCall("calculator", "3", len(text))
    assert find_call(text, len(text)) is None
    assert find_call("<tool>calculator: 2 + 2</to") is None  # not finished yet
    assert find_call("<tool>2+2</tool>") == ToolCall("", "2+2", 16)


def test_run_call(monkeypatch):
    assert run_call(ToolCall("calculator", "23*58", 0), ("calculator",)) == "1334"
    assert run_call(ToolCall("calculator", "1/0", 0), ("calculator",)) == "error: division by zero"
    assert run_call(ToolCall("calculator", "1", 0), ()) == "error: no tools are enabled"
    assert run_call(ToolCall("abacus", "1", 0), ("calculator",)) == (
        "error: no tool named 'abacus'; the tools are: calculator"
    )
    # the calculator never needs the cut: its longest results (sign, 199 digits, 10 places)
    assert len(run_call(ToolCall("calculator", "-10**199/3", 0), ("calculator",))) == 211
    monkeypatch.setitem(TOOLS, "echo", lambda text: text * 100)  # a tool with long answers
    long = run_call(ToolCall("echo", "abc", 0), ("echo",))
    assert len(long) == 256 and long.endswith("...")


def test_split_results_marks_only_results_after_a_call():
    text = "a<tool>calculator: 1</tool><result>1</result>b<result>2</result>"
    assert split_results(text) == [
        ("a<tool>calculator: 1</tool>", True),
        ("<result>1</result>", False),
        ("b<result>2</result>", True),  # no call before it: the model's own text
    ]
    assert "".join(p for p, _ in split_results(text)) == text
    assert split_results("plain") == [("plain", True)]
    assert split_results("") == [("", True)]
    assert split_results("<tool>c: 1</tool> no result") == [("<tool>c: 1</tool> no result", True)]
    assert split_results("<tool>c: 1</tool><result>unclosed") == [
        ("<tool>c: 1</tool><result>unclosed", True)
    ]
    two = call_and_result("calculator", "2*3") + " and " + call_and_result("calculator", "1/4")
    assert [p for p, model in split_results(two) if not model] == [
        "<result>6</result>",
        "<result>0.25</result>",
    ]


def test_final_answer_and_exact_match():
    expected = call_and_result("calculator", "23*58") + " 1334"
    assert expected == "<tool>calculator: 23*58</tool><result>1334</result> 1334"
    assert final_answer(expected) == "1334"
    assert final_answer(" 42 ") == "42"
    # Judged on the final answer: any call that reaches it, none that does not.
    assert exact_match("<tool>calculator: 58*23</tool><result>1334</result> 1334", expected)
    assert not exact_match("<tool>calculator: 23*58</tool><result>1334</result> 1343", expected)
    assert exact_match(" 1334", expected)  # no call at all, the right answer
    assert exact_match(" 5 ", "5") and not exact_match(
        "5</result>5", "5"
    )  # plain answers as before


def test_check_tools():
    assert check_tools(None) == () and check_tools("calculator") == ("calculator",)
    with pytest.raises(ValueError, match="unknown tool"):
        check_tools(["calculator", "web"])
