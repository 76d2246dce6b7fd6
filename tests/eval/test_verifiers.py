"""Verifiers (`buildlm.eval.verifiers`) and the numeric answer reader (`buildlm.eval.answers`).

Hand-written cases per bundled task and per answer form, then a property test: any integer or
decimal written in any supported form reads back as the value Python's `decimal`/`fractions`
give for the same digits.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildlm.data.bundled_tasks import INSTRUCT_TASKS, instruct_examples
from buildlm.eval.answers import format_number, marked_answers, parse_number, reference_value
from buildlm.eval.verifiers import (
    ExactVerifier,
    NumericVerifier,
    Verdict,
    known_verifiers,
    verifier_for,
)

# --- exact: the bundled instruction tasks ---------------------------------------------------

TASK_CASES = {  # task: (answer, a right reply, a wrong reply)
    "add": ("81", " 81", "80"),
    "parity": ("odd", "odd\n", "even"),
    "count": ("2", "2<|endoftext|>", "3"),
    "reverse": ("king night sword", "king night sword", "sword night king"),
    "sort": ("king night sword", "king night sword<|im_end|>", "king sword night"),
    "speaker": ("ROMEO", "ROMEO", "romeo"),
    "last_word": ("death", "death", "death."),
}


@pytest.mark.parametrize("task", INSTRUCT_TASKS)
def test_every_bundled_task_is_checked_exactly(task):
    verifier = verifier_for(task)
    assert isinstance(verifier, ExactVerifier)
    answer, right, wrong = TASK_CASES[task]
    assert verifier.score("", right, answer) == Verdict(1.0, True, answer, True)
    verdict = verifier.score("", wrong, answer)
    assert (verdict.correct, verdict.reward, verdict.format_ok) == (False, 0.0, True)


def test_exact_on_the_real_test_split():
    """Each bundled example's own output is right; another task's output is wrong."""
    examples = instruct_examples(["add", "sort"])["test"][:40]
    verifier = verifier_for("instruct-tasks")
    for ex in examples:
        assert verifier.score(ex["input"], ex["output"], ex["output"]).correct
    assert not verifier.score("", examples[0]["output"], examples[-1]["output"]).correct


def test_exact_reads_the_first_line_and_rewards_the_answer_alone():
    verifier = verifier_for("exact", format_weight=0.5)
    assert verifier.score("", "  81  ", "81") == Verdict(1.5, True, "81", True)
    # right answer, then more text: correct, but not in the requested form
    assert verifier.score("", "81\nBecause 23 + 58 = 81.", "81") == Verdict(1.0, True, "81", False)
    # the reply ends at an end-of-turn marker, whatever follows
    assert verifier.score("", "80<|eot_id|>81", "81") == Verdict(0.5, False, "80", True)
    assert verifier.score("", "81\n\n### Instruction:\nmore", "81").format_ok
    for empty in ("", "   \n ", "<|endoftext|>81"):
        assert verifier.score("", empty, "81") == Verdict(0.0, False, None, False)
    assert ExactVerifier(first_line=False).score("", "a\nb", "a\nb").correct
    assert not ExactVerifier(first_line=False).score("", "a\nb", "a").correct


def test_no_expected_answer_scores_the_form_only():
    assert verifier_for("numeric", 0.2).score("", "#### 5", None) == Verdict(0.2, False, "5", True)


# --- numeric ----------------------------------------------------------------------------------

NUMERIC_CASES = [  # (reply, expected answer, parsed, format_ok)
    ("6 * 7 = 42.\n#### 42", "42", "42", True),
    ("#### 1,234.50", "1234.5", "1234.5", True),
    ("so \\boxed{\\frac{3}{4}}", "0.75", "0.75", True),
    ("\\boxed{\\dfrac{3}{4}}", "3/4", "0.75", True),
    ("\\boxed{3/4}", "0.75", "0.75", True),
    ("\\boxed{1{,}234}", "1234", "1234", True),
    ("\\boxed{-\\frac{1}{3}}", "-1/3", "-1/3", True),
    ("The answer is -17.", "-17", "-17", True),
    ("The answer is $-2.50", "-2.5", "-2.5", True),
    ("Answer: 7.0", "7", "7", True),
    ("#### 50%", "50", "50", True),
    ("It is 3. No: #### 5", "5", "5", True),
    ("#### 3 and then #### 7", "7", "7", True),  # the last mark counts
    ("\\boxed{3} ... The answer is 4", "4", "4", True),
    ("The answer is 4. Final: \\boxed{9}", "9", "9", True),
    ("\\boxed{x = 12}", "12", "12", True),
    ("10-3 = 7, so 7", "7", "7", False),  # no mark: the last number, not in form
    ("The answer isn't 5 but 7", "7", "7", False),
    ("the result is 1,000,000", "1e6", "1000000", False),
    ("#### 0", "0", "0", True),
    ("#### 42<|endoftext|>#### 41", "42", "42", True),  # after the end of text: ignored
]


@pytest.mark.parametrize("reply,answer,parsed,format_ok", NUMERIC_CASES)
def test_numeric_forms(reply, answer, parsed, format_ok):
    answer = "1000000" if answer == "1e6" else answer
    verdict = verifier_for("numeric", format_weight=0.25).score("", reply, answer)
    assert verdict == Verdict(1.0 + 0.25 * format_ok, True, parsed, format_ok)


def test_numeric_wrong_and_missing_answers():
    numeric = verifier_for("numeric", format_weight=0.25)
    assert numeric.score("", "#### 41", "42") == Verdict(0.25, False, "41", True)
    assert numeric.score("", "#### -42", "42").correct is False
    assert numeric.score("", "I do not know.", "42") == Verdict(0.0, False, None, False)
    assert numeric.score("", "#### none", "42") == Verdict(0.0, False, None, False)
    strict = verifier_for("numeric-strict", format_weight=0.25)
    assert strict.score("", "so 42", "42") == Verdict(0.0, False, None, False)
    assert strict.score("", "#### 42", "42") == Verdict(1.25, True, "42", True)


def test_numeric_tolerance():
    assert NumericVerifier().score("", "#### 0.3333333", "1/3").correct  # within 1e-6 relative
    assert not NumericVerifier().score("", "#### 0.333", "1/3").correct
    assert NumericVerifier(rel_tol=1e-2).score("", "#### 0.333", "1/3").correct
    assert not NumericVerifier().score("", "#### 1234", "1235").correct


def test_gsm8k_answer_field():
    field = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72"
    assert reference_value(field) == 72
    assert reference_value(" 1,234 ") == 1234
    assert reference_value("about 5 then 6") == 6
    verifier = verifier_for("gsm8k")
    assert verifier.score("", "48 + 24 = 72\n#### 72", field).correct
    with pytest.raises(ValueError, match="holds no number"):
        verifier.score("", "#### 72", "seventy-two")


def test_registry():
    assert isinstance(verifier_for("instruct-tasks:add,parity"), ExactVerifier)
    assert verifier_for("numeric-strict").strict and not verifier_for("numeric").strict
    assert verifier_for("exact", format_weight=0.3).format_weight == 0.3
    assert {"exact", "numeric", "numeric-strict", "add", "gsm8k"} <= set(known_verifiers())
    with pytest.raises(
        ValueError, match=r"unknown verifier 'bogus'; choose one of exact, numeric"
    ) as err:
        verifier_for("bogus")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="format_weight"):
        verifier_for("exact", format_weight=float("nan"))


def test_format_number_is_canonical():
    assert [format_number(Fraction(x)) for x in ("1234", "-0.75", "1/3", "2.50", "-7/8", "1/40")] == [
        "1234", "-0.75", "1/3", "2.5", "-0.875", "0.025",
    ]  # fmt: skip
    assert parse_number("not 5") is None and parse_number("5 apples") is None


# --- property: any number in any form reads back ----------------------------------------------

FORMS = ("{}", "#### {}", "\\boxed{{{}}}", "The answer is {}.", "Answer: {}", "so {} in all")


@st.composite
def written_numbers(draw):
    """(text, the value Python's Decimal/Fraction give for the digits written)."""
    negative = draw(st.booleans())
    whole = draw(st.integers(0, 10**12))
    if draw(st.booleans()):  # a fraction p/q
        den = draw(st.integers(1, 999))
        digits = f"{'-' if negative else ''}{whole}/{den}"
        shown = draw(
            st.sampled_from([digits, f"{'-' if negative else ''}\\frac{{{whole}}}{{{den}}}"])
        )
        return shown, Fraction(digits)
    decimals = draw(st.text("0123456789", max_size=6))
    plain = f"{'-' if negative else ''}{whole}" + (f".{decimals}" if decimals else "")
    grouped = f"{'-' if negative else ''}{whole:,}" + (f".{decimals}" if decimals else "")
    shown = draw(st.sampled_from([plain, grouped, plain + (".0" if not decimals else "0")]))
    return draw(st.sampled_from([shown, "$" + shown if not negative else shown])), Fraction(
        Decimal(plain)
    )


@settings(derandomize=True, max_examples=300, deadline=None)
@given(written_numbers(), st.sampled_from(FORMS))
def test_any_written_number_reads_back(written, form):
    shown, value = written
    text = form.format(shown)
    marked = form not in ("{}", "so {} in all")
    verdict = NumericVerifier().score("", f"Let me think: 2 + 2.\n{text}", format_number(value))
    assert verdict.correct, (text, value, verdict)
    assert verdict.format_ok == marked
    assert Fraction(parse_number(verdict.parsed)) == value
    if marked:
        assert marked_answers(text)[-1].value == value
