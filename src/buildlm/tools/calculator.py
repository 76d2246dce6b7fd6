"""A safe calculator: arithmetic on text a model wrote, exact, bounded, never ``eval``.

A model that calls a calculator hands it text it generated, so the text is untrusted input:
Python's ``eval`` (or ``exec``, or ``ast.literal_eval``, which still builds huge numbers) on
it would run whatever the model wrote, and ``9**9**9`` alone would hang the process. This
file reads the text itself, in two small steps a learner can follow:

1. **Tokens.** `tokenize` cuts the text into numbers (``12``, ``3.25``), the operators
   ``+ - * / **`` and parentheses; spaces are skipped and anything else is an error.
2. **Parse and evaluate.** A recursive-descent parser, one method per rule of the grammar,
   lowest precedence first, evaluates as it parses::

       expr   := term (("+" | "-") term)*
       term   := unary (("*" | "/") unary)*
       unary  := ("-" | "+") unary | power
       power  := atom ("**" unary)?          # right-associative: 2**3**2 = 2**9
       atom   := NUMBER | "(" expr ")"

   As in Python, ``-2**2`` is ``-4`` (the power binds tighter than the sign on its left) and
   ``2**-1`` is ``0.5``.

**Exact.** Every number is a `fractions.Fraction`: ``0.1 + 0.2`` is exactly ``0.3``, and
``1/3*3`` is ``1``. `format_number` writes the result: an integer as digits, a fraction whose
decimal expansion ends exactly (``7/4``) in full, any other rounded to `CalculatorLimits.places`
decimal places (``1/3`` -> ``0.3333333333``, ties to even).

**Bounded.** `CalculatorLimits` caps the length of the text, the digits of a number written in
it, the nesting of parentheses (the parser recurses once per level), the size of an exponent,
and the size of every intermediate result (checked *before* a power is computed, from the
bit lengths, so ``9**9**9`` is refused at once instead of filling the memory).

Bad input is never an exception the caller must catch: `calculate` returns the result as text
or a one-line ``"error: ..."`` naming the problem, which goes back to the model as the tool's
result (``error: division by zero``), so it can read it as it would a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction


class CalculatorError(ValueError):
    """An expression the calculator refuses: the message is what the model is told."""


@dataclass(frozen=True)
class CalculatorLimits:
    """How much work one expression may ask for.

    Args:
        max_length: characters in the expression.
        max_number_digits: digits in one number as written (``3.25`` has 3).
        max_depth: parentheses nested inside one another.
        max_exponent: the largest absolute value of an exponent.
        max_result_digits: decimal digits of any result along the way, numerator and
            denominator each.
        places: decimal places of a result whose decimal expansion does not end.
    """

    max_length: int = 256
    max_number_digits: int = 30
    max_depth: int = 32
    max_exponent: int = 1000
    max_result_digits: int = 200
    places: int = 10


DEFAULT_LIMITS = CalculatorLimits()

# One token: a number (ASCII digits, optionally a point and more digits), "**", one operator or
# parenthesis, or any other single character (which the parser then refuses by name).
_TOKEN = re.compile(r"\s*(?:([0-9]+(?:\.[0-9]+)?)|(\*\*|[-+*/()])|(\S))")


def tokenize(expression: str, limits: CalculatorLimits = DEFAULT_LIMITS) -> list[str]:
    """The expression's tokens: numbers as written, operators, parentheses.

    Raises `CalculatorError` for a character that is none of these, or a number with more
    than ``limits.max_number_digits`` digits.
    """
    tokens: list[str] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:  # only trailing spaces are left
            break
        number, operator, other = match.groups()
        if other is not None:
            where = match.start(3)
            hint = "; use ** for powers" if other == "^" else ""
            raise CalculatorError(f"unexpected character {other!r} at position {where}{hint}")
        if number is not None:
            digits = len(number) - ("." in number)
            if digits > limits.max_number_digits:
                raise CalculatorError(
                    f"a number has {digits} digits; at most {limits.max_number_digits} are allowed"
                )
        tokens.append(number if number is not None else operator)
        pos = match.end()
    return tokens


def _number(text: str) -> Fraction:
    """``"3.25"`` -> 13/4, exactly: the digits over a power of ten."""
    whole, _, decimals = text.partition(".")
    return Fraction(int(whole + decimals), 10 ** len(decimals))


class _Parser:
    """Recursive descent over `tokenize`'s tokens; each method parses and evaluates one rule."""

    def __init__(self, tokens: list[str], limits: CalculatorLimits) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.limits = limits
        self.bound = 10**limits.max_result_digits

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise CalculatorError("the expression ends too early; a number or '(' is missing")
        self.pos += 1
        return token

    def checked(self, value: Fraction) -> Fraction:
        if abs(value.numerator) >= self.bound or value.denominator >= self.bound:
            raise CalculatorError(
                f"a result has more than {self.limits.max_result_digits} digits; "
                "use smaller numbers"
            )
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            if self.take() == "+":
                value = self.checked(value + self.term())
            else:
                value = self.checked(value - self.term())
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            if self.take() == "*":
                value = self.checked(value * self.unary())
            else:
                divisor = self.unary()
                if divisor == 0:
                    raise CalculatorError("division by zero")
                value = self.checked(value / divisor)
        return value

    def unary(self) -> Fraction:
        if self.peek() in ("-", "+"):
            sign = self.take()
            self.enter()  # "- - - 1": each sign is one more level of recursion
            value = self.unary()
            self.depth -= 1
            return -value if sign == "-" else value
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        self.enter()
        exponent = self.unary()
        self.depth -= 1
        return self.checked(self.raise_to(base, exponent))

    def raise_to(self, base: Fraction, exponent: Fraction) -> Fraction:
        """``base ** exponent`` for a whole exponent, refused before it is computed if the
        result would be too big: a number of ``b`` bits to the power ``e`` has about ``b*e``."""
        if exponent.denominator != 1:
            raise CalculatorError("an exponent must be a whole number (roots are not exact)")
        e = exponent.numerator
        if abs(e) > self.limits.max_exponent:
            raise CalculatorError(
                f"the exponent {e} is too large; at most {self.limits.max_exponent} is allowed"
            )
        if base == 0 and e < 0:
            raise CalculatorError("division by zero (0 to a negative power)")
        bits = max(abs(base.numerator).bit_length(), base.denominator.bit_length())
        if (bits - 1) * abs(e) > self.bound.bit_length():  # at least 2**((bits-1)*e)
            raise CalculatorError(
                f"a result has more than {self.limits.max_result_digits} digits; "
                "use smaller numbers"
            )
        return base**e

    def atom(self) -> Fraction:
        token = self.take()
        if token == "(":
            self.enter()
            value = self.expr()
            if self.peek() != ")":
                found = "the end" if self.peek() is None else repr(self.peek())
                raise CalculatorError(f"a ')' is missing (found {found})")
            self.take()
            self.depth -= 1
            return value
        if token[0] in "0123456789":
            return _number(token)
        raise CalculatorError(f"expected a number or '(', found {token!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise CalculatorError(
                f"the expression nests more than {self.limits.max_depth} levels deep"
            )


def evaluate(expression: str, limits: CalculatorLimits = DEFAULT_LIMITS) -> Fraction:
    """The exact value of ``expression``; raises `CalculatorError` naming what is wrong."""
    if len(expression) > limits.max_length:
        raise CalculatorError(
            f"the expression has {len(expression)} characters; at most {limits.max_length} "
            "are allowed"
        )
    tokens = tokenize(expression, limits)
    if not tokens:
        raise CalculatorError("the expression is empty")
    parser = _Parser(tokens, limits)
    value = parser.expr()
    if parser.peek() is not None:
        raise CalculatorError(f"unexpected {parser.peek()!r} after a complete expression")
    return value


def format_number(value: Fraction, places: int = DEFAULT_LIMITS.places) -> str:
    """Digits for ``value``: exact when its decimal expansion ends, else ``places`` decimals.

    ``7/4`` -> ``"1.75"``, ``-3`` -> ``"-3"``, ``2/3`` -> ``"0.6666666667"`` (rounded, ties
    to even); never ``"-0"``.
    """
    twos = fives = 0
    rest = value.denominator
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    # Only 2s and 5s below the line: 10**max(twos, fives) is a multiple of it, exact digits.
    shown = max(twos, fives) if rest == 1 else places
    scaled = round(value * 10**shown)  # an int; Fraction rounds ties to even
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(shown + 1, "0")
    whole, decimals = digits[: len(digits) - shown], digits[len(digits) - shown :]
    decimals = decimals.rstrip("0")
    return sign + whole + ("." + decimals if decimals else "")


def calculate(expression: str, limits: CalculatorLimits = DEFAULT_LIMITS) -> str:
    """The calculator as a tool: the result as text, or ``"error: ..."``; never raises."""
    try:
        return format_number(evaluate(expression, limits), limits.places)
    except CalculatorError as err:
        return f"error: {err}"
