"""Asterisk dialplan expressions, the `...` of `$[...]` (main/ast_expr2.y and .fl).

The dialplan substitutes `${...}` inside the brackets first, then hands the
text to `evaluate`. What is emulated, from lowest to highest precedence:

    |  &  (also || &&)
    =  !=  <  >  <=  >=  (also ==)
    +  -
    *  /  %
    unary -  !
    ( )  numbers  "quoted strings"  bare words

Asterisk's rules, which `evaluate` follows:

- A number token (`[0-9]+(.[0-9]+)?`, so `01` too) is numeric; a bare word or
  a quoted string is a string, and a quoted string keeps its quotes
  (`"waiting"` compares equal to `"waiting"`, not to `waiting`).
- Comparisons are numeric when neither side is a string, else they compare
  the texts; they give 1 or 0.
- `a | b` gives a unless a is empty or zero, then b; `a & b` gives a when
  neither is empty or zero, else 0 (the operands themselves, not 1).
- Arithmetic is decimal (Asterisk uses long double: `7 / 2` is 3.5) and a
  result prints like C's `%.18Lg`. A non-numeric operand is ignored by `+`
  and `-`, gives 0 for `*` and `%`; division by zero gives 2147483647.
- A number token as the whole result comes back as written (`$[01]` is 01).
- An empty expression gives "".

Not emulated (`UnsupportedExpressionError`): the conditional `? ::`, the regex
operators `:` and `=~`, concatenation `~~` and function calls `NAME(...)`.
Characters no rule of Asterisk's scanner knows (`{`, `~`, a lone `"`) are
skipped, as flex's default rule does.
"""

from __future__ import annotations

import decimal
import operator as op
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

INT_MAX = Decimal(2147483647)  # op_div's answer to a division by zero
# Enough digits that rounding to %.18Lg's 18 matches long double arithmetic.
_ARITHMETIC = decimal.Context(prec=40)
_PRINTED = decimal.Context(prec=18, rounding=decimal.ROUND_HALF_EVEN)

_WHITESPACE = " \t\r\n"
_OPERATORS = (
    # Longest first, so `>=` is not read as `>` `=` (flex takes the longest match).
    ("||", "|"),
    ("&&", "&"),
    ("==", "="),
    ("!=", "!="),
    (">=", ">="),
    ("<=", "<="),
    ("=~", "=~"),
    ("~~", "~~"),
    ("::", "::"),
    ("|", "|"),
    ("&", "&"),
    ("=", "="),
    (">", ">"),
    ("<", "<"),
    ("+", "+"),
    ("-", "-"),
    ("*", "*"),
    ("/", "/"),
    ("%", "%"),
    ("!", "!"),
    ("(", "("),
    (")", ")"),
    ("?", "?"),
    (":", ":"),
    (",", ","),
)
_UNSUPPORTED_OPERATORS = {"=~", "~~", "::", "?", ":", ","}
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# ast_expr2.fl's bare word: letters, digits, . ' ; \ _ ^ # @, bytes >= 0x80, `$` + not `{`.
_WORD = re.compile(r"(?:[a-zA-Z0-9.';\\_^#@\x80-\U0010ffff]|\$[^{])+")
_QUOTED = re.compile(r'"[^"]*"')
_LEADING_INT = re.compile(r"\s*[+-]?\d+")

# Both sides Decimal, or both str: Asterisk compares texts when either is a string.
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": op.eq,
    "!=": op.ne,
    "<": op.lt,
    ">": op.gt,
    "<=": op.le,
    ">=": op.ge,
}
_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"|"}),
    frozenset({"&"}),
    frozenset(_COMPARISONS),
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%"}),
)


class ExpressionError(ValueError):
    """Asterisk would answer this expression with a syntax error (and the value 0)."""


class UnsupportedExpressionError(ExpressionError):
    """Valid Asterisk, but an operator the emulator does not evaluate."""


@dataclass(frozen=True, slots=True)
class _Operand:
    """A value: `text` as written (None once computed), `number` when numeric."""

    text: str | None
    number: Decimal | None

    @property
    def is_string(self) -> bool:
        return self.number is None

    def as_text(self) -> str:
        if self.text is not None:
            return self.text
        assert self.number is not None
        return format_number(self.number)

    def as_computed(self) -> _Operand:
        """The operand after Asterisk's to_number: numeric text prints as a number from now on."""
        return self if self.number is None else _computed(self.number)


def _computed(number: Decimal) -> _Operand:
    return _Operand(None, number)


_ZERO = _computed(Decimal(0))


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "operand" or the operator text
    operand: _Operand | None = None


def evaluate(expression: str) -> str:
    """The value of an Asterisk expression, as the dialplan would substitute it."""
    tokens = _tokenize(expression)
    if not tokens:
        return ""
    parser = _Parser(tokens, expression)
    result = parser.parse()
    return result.as_text()


def leading_integer(text: str) -> int | None:
    """The integer C's `sscanf("%d")` or `atoi` reads at the start of `text`
    (blanks and a sign allowed); None when it starts with no digits."""
    match = _LEADING_INT.match(text)
    return int(match.group()) if match is not None else None


def format_number(number: Decimal) -> str:
    """C's `%.18Lg`: 18 significant digits, no trailing zeros, exponent when far from 1."""
    if number == number.to_integral_value() and abs(number) < Decimal(10) ** 18:
        return str(int(number))
    rounded = _PRINTED.plus(number)
    exponent = rounded.adjusted()
    if -4 <= exponent < 18:
        return _strip_zeros(format(rounded, "f"))
    mantissa = _strip_zeros(format(rounded.scaleb(-exponent), "f"))
    return f"{mantissa}e{exponent:+03d}"


def _strip_zeros(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(expression):
        char = expression[index]
        if char in _WHITESPACE:
            index += 1
            continue
        quoted = _QUOTED.match(expression, index)
        if quoted:
            tokens.append(_Token("operand", _Operand(quoted.group(), None)))
            index = quoted.end()
            continue
        number = _NUMBER.match(expression, index)
        word = _WORD.match(expression, index)
        # Longest match wins; on a tie the number rule, which comes first in the scanner.
        if number and (not word or number.end() >= word.end()):
            text = number.group()
            tokens.append(_Token("operand", _Operand(text, Decimal(text))))
            index = number.end()
            continue
        if word:
            tokens.append(_Token("operand", _Operand(word.group(), None)))
            index = word.end()
            continue
        for written, kind in _OPERATORS:
            if expression.startswith(written, index):
                tokens.append(_Token(kind))
                index += len(written)
                break
        else:
            index += 1  # flex's default rule: an unknown character is echoed and skipped
    return tokens


class _Parser:
    """Precedence climbing over ast_expr2.y's levels (all binary operators left-associative)."""

    def __init__(self, tokens: list[_Token], expression: str) -> None:
        self.tokens = tokens
        self.expression = expression
        self.position = 0

    def parse(self) -> _Operand:
        result = self._binary(0)
        if self.position < len(self.tokens):
            self._fail(f"unexpected {self.tokens[self.position].kind!r}")
        return result

    def _peek(self) -> str | None:
        if self.position < len(self.tokens):
            kind = self.tokens[self.position].kind
            if kind in _UNSUPPORTED_OPERATORS:
                raise UnsupportedExpressionError(
                    f"operator {kind!r} is not emulated: {self.expression!r}"
                )
            return kind
        return None

    def _fail(self, problem: str) -> None:
        raise ExpressionError(f"syntax error, {problem}: {self.expression!r}")

    def _binary(self, level: int) -> _Operand:
        if level == len(_LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while (operator := self._peek()) in _LEVELS[level]:
            assert operator is not None
            self.position += 1
            right = self._binary(level + 1)
            left = _apply(operator, left, right)
        return left

    def _unary(self) -> _Operand:
        operator = self._peek()
        if operator == "-":
            self.position += 1
            return _negate(self._unary())
        if operator == "!":
            self.position += 1
            return _complement(self._unary())
        return self._primary()

    def _primary(self) -> _Operand:
        operator = self._peek()
        if operator == "(":
            self.position += 1
            inner = self._binary(0)
            if self._peek() != ")":
                self._fail("missing ')'")
            self.position += 1
            return inner
        if operator != "operand":
            self._fail("expected a value" if operator is None else f"unexpected {operator!r}")
        operand = self.tokens[self.position].operand
        assert operand is not None
        self.position += 1
        if self._peek() == "(":
            raise UnsupportedExpressionError(
                f"function calls are not emulated: {self.expression!r}"
            )
        return operand


def _is_zero_or_null(value: _Operand) -> bool:
    if value.number is not None:
        return value.number == 0
    return value.as_text() == ""


def _apply(operator: str, left: _Operand, right: _Operand) -> _Operand:
    if operator == "|":
        return right if _is_zero_or_null(left) else left.as_computed()
    if operator == "&":
        if _is_zero_or_null(left) or _is_zero_or_null(right):
            return _ZERO
        return left.as_computed()
    if operator in _COMPARISONS:
        return _compare(operator, left, right)
    return _arithmetic(operator, left, right)


def _compare(operator: str, left: _Operand, right: _Operand) -> _Operand:
    compare = _COMPARISONS[operator]
    if left.number is None or right.number is None:
        outcome = compare(left.as_text(), right.as_text())
    else:
        outcome = compare(left.number, right.number)
    return _computed(Decimal(int(outcome)))


def _arithmetic(operator: str, left: _Operand, right: _Operand) -> _Operand:
    a, b = left.number, right.number
    if operator == "+":
        if a is None:
            return _ZERO if b is None else right.as_computed()
        if b is None:
            return left.as_computed()
        return _computed(_ARITHMETIC.add(a, b))
    if operator == "-":
        if a is None:
            return _ZERO if b is None else _computed(-b)
        if b is None:
            return left.as_computed()
        return _computed(_ARITHMETIC.subtract(a, b))
    if a is None:
        return _ZERO
    if operator == "/":
        if b is None or b == 0:
            return _computed(INT_MAX)
        return _computed(_ARITHMETIC.divide(a, b))
    if b is None:
        return _ZERO
    if operator == "*":
        return _computed(_ARITHMETIC.multiply(a, b))
    if b == 0:  # op_rem hands back its zero divisor
        return right.as_computed()
    # fmodl: the remainder takes the dividend's sign, as Decimal's does.
    return _computed(_ARITHMETIC.remainder(a, b))


def _negate(value: _Operand) -> _Operand:
    if value.number is None:
        return _ZERO
    return _computed(-value.number)


def _complement(value: _Operand) -> _Operand:
    """op_compl: `!` of a number; of text, C's atoi of it (so `!abc` is 1)."""
    if value.text is None:
        assert value.number is not None
        truth = value.number != 0
    else:
        truth = bool(leading_integer(value.text))
    return _computed(Decimal(int(not truth)))
