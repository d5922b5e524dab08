"""Priority expressions of the `queue` node, and `${var}` in text values.

A queue's priority may be a whole number or an expression over flow
variables, checked when the flow loads and computed when the caller reaches
the queue:

    priority: "years * 2 + 5"
    priority: "max(segment_boost, 3) - 1"

Allowed: whole numbers, variable names, `+ - * //`, unary minus, parentheses,
`min(...)` and `max(...)`. A variable that is unset or not a whole number
counts as 0 (a caller is never refused for a missing look-up), and the
result is clamped to ±PRIORITY_LIMIT so a runaway value cannot starve a queue.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass

PRIORITY_LIMIT = 1000
_FUNCTIONS = {"min": min, "max": max}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_]\w*)\}")


class ExpressionError(ValueError):
    """The text is not a priority expression; the message says why."""


@dataclass(frozen=True)
class PriorityExpression:
    """A checked expression; `evaluate` never raises."""

    text: str
    tree: ast.expr
    variables: frozenset[str]

    def evaluate(self, variables: Mapping[str, str]) -> int:
        value = _evaluate(self.tree, variables)
        return max(-PRIORITY_LIMIT, min(PRIORITY_LIMIT, value))


def parse_priority(text: str) -> PriorityExpression:
    """Check `text`; ExpressionError names the first thing not allowed."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r} is not an expression ({exc.msg})") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        _check(node, text)
        if isinstance(node, ast.Name) and node.id not in _FUNCTIONS:
            names.add(node.id)
    return PriorityExpression(text, tree, frozenset(names))


def _check(node: ast.AST, text: str) -> None:
    allowed = (
        ast.Expression,
        ast.BinOp,
        ast.UnaryOp,
        ast.Add,
        ast.Sub,
        ast.Mult,
        ast.FloorDiv,
        ast.USub,
        ast.UAdd,
        ast.Name,
        ast.Load,
        ast.Call,
    )
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int):
            raise ExpressionError(f"{text!r}: only whole numbers, not {node.value!r}")
        return
    if not isinstance(node, allowed):
        raise ExpressionError(
            f"{text!r}: {type(node).__name__} is not allowed "
            "(whole numbers, variables, + - * //, min(), max())"
        )
    if isinstance(node, ast.Call):
        function = node.func
        if not isinstance(function, ast.Name) or function.id not in _FUNCTIONS:
            raise ExpressionError(f"{text!r}: only min() and max() may be called")
        if node.keywords or not node.args:
            raise ExpressionError(f"{text!r}: {function.id}() takes one or more values")


def _evaluate(node: ast.expr, variables: Mapping[str, str]) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return _whole(variables.get(node.id, ""))
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, variables)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, variables), _evaluate(node.right, variables)
        left, right = _clamp(left), _clamp(right)  # no huge intermediate numbers
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return left // right if right else 0
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return int(_FUNCTIONS[node.func.id](_evaluate(arg, variables) for arg in node.args))
    raise AssertionError(f"unchecked expression node {ast.dump(node)}")


def _clamp(value: int) -> int:
    return max(-(10**9), min(10**9, value))


def _whole(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """`"${language}"` -> the variable's value ("" when unset); other text as is."""
    return _PLACEHOLDER.sub(lambda match: variables.get(match.group(1), ""), text)
