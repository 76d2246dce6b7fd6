"""The calculator against Python's own exact arithmetic, and every bound and error it has.

Expressions are generated as trees (hypothesis, derandomized), printed with only the
parentheses precedence needs (so the parser must get precedence and associativity right), and
evaluated in the test with `fractions.Fraction` on the tree itself: no ``eval`` anywhere.
"""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildlm.tools.calculator import (
    CalculatorError,
    CalculatorLimits,
    calculate,
    evaluate,
    format_number,
    tokenize,
)

# Precedence of what a tree's root prints as: sums 1, products 2, signs 3, powers 4, atoms 5.
PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "**": 4, "num": 5}

numbers = st.one_of(
    st.integers(0, 10_000).map(str),
    st.tuples(st.integers(0, 999), st.integers(0, 999)).map(
        lambda t: f"{t[0]}.{t[1]:03d}".rstrip("0").rstrip(".")
    ),
)
exponents = st.tuples(st.booleans(), st.integers(0, 3)).map(
    lambda t: ("neg", ("num", str(t[1]))) if t[0] else ("num", str(t[1]))
)


def trees(depth: int = 4):
    leaf = numbers.map(lambda n: ("num", n))
    return st.recursive(
        leaf,
        lambda sub: st.one_of(
            st.tuples(st.sampled_from(["+", "-", "*", "/"]), sub, sub),
            st.tuples(st.just("neg"), sub),
            st.tuples(st.just("**"), sub, exponents),
        ),
        max_leaves=8,
    )


def value(tree) -> Fraction:
    """The tree's value with Fraction (ZeroDivisionError as Python raises it)."""
    op = tree[0]
    if op == "num":
        return Fraction(tree[1])
    if op == "neg":
        return -value(tree[1])
    a, b = value(tree[1]), value(tree[2])
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    return a ** int(b)  # "**": the exponent is a whole number by construction


def show(tree, spaces: bool) -> str:
    """Print with the parentheses precedence needs, and no more."""
    op = tree[0]
    if op == "num":
        return tree[1]

    def wrap(sub, need: bool) -> str:
        text = show(sub, spaces)
        return f"({text})" if need else text

    if op == "neg":
        return "-" + wrap(tree[1], PREC[tree[1][0]] < PREC["neg"])
    left, right = tree[1], tree[2]
    if op == "**":  # right-associative, binds tighter than a sign on its left
        text = wrap(left, PREC[left[0]] <= PREC["**"]), wrap(right, PREC[right[0]] < PREC["neg"])
    else:  # left-associative
        text = wrap(left, PREC[left[0]] < PREC[op]), wrap(right, PREC[right[0]] <= PREC[op])
    sep = " " if spaces else ""
    return f"{text[0]}{sep}{op}{sep}{text[1]}"


@settings(derandomize=True, max_examples=400, deadline=None)
@given(trees(), st.booleans())
def test_matches_fraction_arithmetic_on_generated_expressions(tree, spaces):
    text = show(tree, spaces)
    try:
        expected = value(tree)
    except ZeroDivisionError:
        with pytest.raises(CalculatorError, match="division by zero"):
            evaluate(text)
        assert calculate(text).startswith("error: division by zero")
        return
    assert evaluate(text) == expected, text
    shown = calculate(text)
    assert abs(Fraction(shown) - expected) <= Fraction(1, 2 * 10**10), (text, shown)


@pytest.mark.parametrize(
    "text, result",
    [
        ("23*58", "1334"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("10 - 4 - 3", "3"),  # left-associative
        ("64 / 4 / 2", "8"),
        ("2**3**2", "512"),  # right-associative
        ("-2**2", "-4"),  # the power binds tighter than the sign
        ("(-2)**2", "4"),
        ("2**-1", "0.5"),
        ("- - 3", "3"),
        ("+3", "3"),
        ("0.1 + 0.2", "0.3"),  # exact, not 0.30000000000000004
        ("1/3*3", "1"),
        ("7/4", "1.75"),
        ("1/3", "0.3333333333"),
        ("-2/3", "-0.6666666667"),
        ("1/8", "0.125"),
        ("1/1024", "0.0009765625"),  # exact: 10 places, all shown
        ("1/2048", "0.00048828125"),  # exact: more places than `places`, still exact
        ("1/3 / 10**12", "0"),  # rounds to zero: "0", never "-0"
        ("-1/3 / 10**12", "0"),
        ("  12  ", "12"),
        ("007", "7"),
    ],
)
def test_examples(text, result):
    assert calculate(text) == result


def test_format_number_ties_to_even():
    assert format_number(Fraction(1, 4), places=1) == "0.25"  # exact: never rounded
    assert format_number(Fraction(5, 3), places=0) == "2"
    assert format_number(Fraction(-5, 3), places=2) == "-1.67"


@pytest.mark.parametrize(
    "text, error",
    [
        ("1/0", "division by zero"),
        ("1/(2-2)", "division by zero"),
        ("0**-1", "division by zero"),
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("1 +", "ends too early"),
        ("(1 + 2", r"a '\)' is missing \(found the end\)"),
        ("(1 2)", r"a '\)' is missing \(found '2'\)"),
        ("1)", r"unexpected '\)' after a complete expression"),
        ("1 2", "unexpected '2' after a complete expression"),
        ("*3", r"expected a number or '\(', found '\*'"),
        ("2^3", r"unexpected character '\^' at position 1; use \*\* for powers"),
        ("1e5", "unexpected character 'e' at position 1"),
        ("3.5.2", "unexpected character '.' at position 3"),
        (".5", "unexpected character '.' at position 0"),
        ("__import__('os')", "unexpected character '_' at position 0"),
        ("\u0663+1", "unexpected character"),  # an Arabic-Indic 3: only ASCII digits are numbers
        ("2**0.5", "whole number"),
        ("4**(1/2)", "whole number"),
    ],
)
def test_errors(text, error):
    with pytest.raises(CalculatorError, match=error):
        evaluate(text)
    assert calculate(text).startswith("error: ")


def test_length_bound():
    limits = CalculatorLimits(max_length=10)
    assert calculate("1+1+1+1+1", limits) == "5"  # 9 characters
    assert calculate("1+1+1+1+11", limits) == "15"  # 10
    assert (
        calculate("1+1+1+1+1+1", limits)
        == "error: the expression has 11 characters; at most 10 are allowed"
    )
    assert calculate("1" * 300).startswith("error: the expression has 300 characters")


def test_digit_bound():
    assert calculate("1" * 30) == "1" * 30
    assert calculate("1" * 31) == "error: a number has 31 digits; at most 30 are allowed"
    assert calculate("1." + "0" * 29) == "1"  # 30 digits
    assert calculate("1." + "0" * 30).startswith("error: a number has 31 digits")
    with pytest.raises(CalculatorError, match="3 digits"):
        tokenize("123", CalculatorLimits(max_number_digits=2))


@pytest.mark.parametrize(
    "make", [lambda n: "(" * n + "1" + ")" * n, lambda n: "-" * n + "1", lambda n: "1**" * n + "1"]
)
def test_nesting_bound(make):
    limits = CalculatorLimits(max_depth=32)
    assert not calculate(make(32), limits).startswith("error")
    assert calculate(make(33), limits) == "error: the expression nests more than 32 levels deep"
    assert calculate(make(10_000)).startswith("error:")  # never a RecursionError


def test_exponent_bound():
    assert calculate("1**1000") == "1"
    assert calculate("1**1001") == "error: the exponent 1001 is too large; at most 1000 is allowed"
    assert calculate("2**-1001").startswith("error: the exponent -1001 is too large")


def test_result_size_bound_is_checked_before_computing():
    assert calculate("10**199") == "1" + "0" * 199
    too_big = "error: a result has more than 200 digits; use smaller numbers"
    assert calculate("10**200") == too_big
    assert calculate("10**-200") == too_big  # the denominator counts too
    assert calculate("(10**100) * (10**100)") == too_big
    t0 = time.perf_counter()
    assert calculate("9**9**9").startswith("error:")  # 9**387420489 would take hours
    assert calculate("999999999999**1000") == too_big  # refused from the bit lengths
    assert time.perf_counter() - t0 < 0.5


def test_tokens():
    assert tokenize(" (12.5+3)**-2 ") == ["(", "12.5", "+", "3", ")", "**", "-", "2"]
