"""Reading a numeric answer out of free text: ``#### 42``, ``\\boxed{3/4}``, "The answer is -1,234.5".

A model asked a maths question writes reasoning and then, if it learned the convention, marks its
final answer. Three marks are common:

- GSM8K's ``#### 72`` (the dataset's own answers end this way);
- LaTeX's ``\\boxed{72}`` (MATH and most chain-of-thought prompts), whose content may itself be
  LaTeX: ``\\boxed{\\frac{3}{4}}``, ``\\boxed{1{,}234}``;
- plain English, "The answer is 72" / "Answer: 72".

`marked_answers` finds every marked number in order; the *last* one counts (a model often writes
a tentative answer and corrects it). `last_number` is the fallback when nothing is marked (what
lm-evaluation-harness calls "flexible extract"), and `reference_value` reads the expected answer
of a data set the same way (GSM8K's answer field is reasoning then ``#### 72``).

Numbers are exact `fractions.Fraction` values, so ``0.75``, ``3/4``, ``\\frac{3}{4}`` and
``.750`` are one value; ``1,234`` is a thousand-separated integer, ``$5`` and ``5%`` are 5.
Model text is only ever matched with regular expressions: never ``eval``-ed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# One number in text: an optional sign (not a minus between two terms, as in "10-3"), digits with
# optional thousands commas and decimals, optionally "/ denominator". Group 1 sign, 2 body, 3 den.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])([-−+]))?"  # a sign, unless it follows a word or a closing bracket
    r"\$?"
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?|\.\d+)"  # 1,234.5 | 1234.5 | .5
    r"(?:\s*/\s*(\d+)(?!\d|\.\d))?"  # 3/4
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_HASHES = re.compile(r"####")
_ANSWER_IS = re.compile(r"\banswer\s*(?:is\b|:)", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


@dataclass(frozen=True)
class MarkedAnswer:
    """A number found after a marker: where the marker starts, which form, and the value."""

    start: int
    form: str  # "####", "boxed" or "answer is"
    value: Fraction


def _clean_latex(text: str) -> str:
    """LaTeX spellings of numbers as plain text: ``\\frac{3}{4}`` -> ``3/4``, ``1{,}234`` -> ``1,234``."""
    text = _TEXT.sub(r"\1", text)
    text = _FRAC.sub(r"\1/\2", text)
    for old, new in (("{,}", ","), ("\\,", ""), ("\\!", ""), ("\\%", "%"), ("\\$", "$")):
        text = text.replace(old, new)
    return text.replace("\\left", "").replace("\\right", "")


def _value(match: re.Match[str]) -> Fraction | None:
    sign, body, den = match.groups()
    value = Fraction(body.replace(",", ""))
    if den is not None:
        if int(den) == 0:
            return None
        value /= int(den)
    return -value if sign in ("-", "−") else value


def numbers(text: str) -> list[Fraction]:
    """Every number in ``text``, in order (LaTeX fractions and separators understood)."""
    return [v for m in _NUMBER.finditer(_clean_latex(text)) if (v := _value(m)) is not None]


def parse_number(text: str) -> Fraction | None:
    """The value of ``text`` when it is one number and nothing else (spaces, ``$``, ``%`` aside)."""
    cleaned = _clean_latex(text).strip().rstrip(".").strip().rstrip("%").strip()
    match = _NUMBER.fullmatch(cleaned)
    return _value(match) if match else None


def first_number(text: str) -> Fraction | None:
    found = numbers(text)
    return found[0] if found else None


def last_number(text: str) -> Fraction | None:
    """The last number in ``text`` (the fallback when no answer is marked)."""
    found = numbers(text)
    return found[-1] if found else None


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    """(start, content) of every ``\\boxed{...}``, braces matched (``\\boxed{\\frac{1}{2}}``)."""
    out = []
    for match in _BOXED.finditer(text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((match.start(), text[match.end() : i - 1]))
    return out


def marked_answers(text: str) -> list[MarkedAnswer]:
    """Every marked numeric answer in ``text``, in order of position.

    After ``####`` and "answer is" the first number that follows on the same line counts
    ("#### 42 apples" is 42); in ``\\boxed{}`` the whole content when it is one number, else
    its last number (``\\boxed{x = 5}`` is 5). Marks with no number after them are skipped.
    """
    found: list[MarkedAnswer] = []
    for start, content in _boxed_contents(text):
        value = parse_number(content)
        value = value if value is not None else last_number(content)
        if value is not None:
            found.append(MarkedAnswer(start, "boxed", value))
    for pattern, form in ((_HASHES, "####"), (_ANSWER_IS, "answer is")):
        for match in pattern.finditer(text):
            line_end = text.find("\n", match.end())
            value = first_number(text[match.end() : line_end if line_end != -1 else len(text)])
            if value is not None:
                found.append(MarkedAnswer(match.start(), form, value))
    return sorted(found, key=lambda m: m.start)


def final_answer(text: str) -> Fraction | None:
    """The last marked answer of ``text``, or None when no number is marked."""
    marked = marked_answers(text)
    return marked[-1].value if marked else None


def reference_value(answer: str) -> Fraction:
    """The expected value of a data set's answer field: a bare number, or text ending in a mark.

    ``"72"``, ``"3/4"``, and GSM8K's ``"Natalia sold 48/2 = 24 ... #### 72"`` (72) all work;
    an answer with a mark uses its last mark, one without uses its last number.
    """
    value = parse_number(answer)
    if value is None:
        value = final_answer(answer)
    if value is None:
        value = last_number(answer)
    if value is None:
        raise ValueError(
            f"the expected answer {answer[:60]!r} holds no number; check the data's answer field"
        )
    return value


def format_number(value: Fraction) -> str:
    """A canonical spelling: ``1234``, ``-0.75``, ``1/3`` (a decimal when one is exact)."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def close(a: Fraction, b: Fraction, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Equal, or within the tolerance (``math.isclose``'s rule, on exact values)."""
    if a == b:
        return True
    return abs(a - b) <= max(Fraction(rel_tol) * max(abs(a), abs(b)), Fraction(abs_tol))
