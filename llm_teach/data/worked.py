"""Worked solutions for reasoning-gym arithmetic (`rg:chain_sum?...&solutions=worked`).

reasoning-gym gives each problem a final answer but no solution; SFT on the bare answer teaches a
small model to guess. The arithmetic tasks (chain_sum, basic_arithmetic, ...) record the
expression they asked about in `metadata.expression`, so a step-by-step solution can be written
exactly: each operation in evaluation order, one `a op b = c` at a time, then the boxed answer
the evaluation prompt asks for::

    3 + 4 - 2  ->  "3 + 4 = 7, 7 - 2 = 5. The final answer is \\boxed{5}."

Written by hand because no library spells out an evaluation order as text. The expression is
parsed with `ast.parse` (never evaluated as code) and only numbers, + - * / and unary minus are
accepted; anything else gets no solution.
"""

from __future__ import annotations

import ast
from fractions import Fraction

_OPS = {ast.Add: ("+", lambda a, b: a + b), ast.Sub: ("-", lambda a, b: a - b),
        ast.Mult: ("*", lambda a, b: a * b), ast.Div: ("/", lambda a, b: a / b)}


class _NotArithmetic(ValueError):
    pass


def worked_solution(expression: str, answer: str) -> str | None:
    """The step-by-step solution of `expression`, or None when it is not plain arithmetic or
    its value disagrees with reasoning-gym's `answer` (a solution must never teach a wrong
    answer, so a disagreement leaves the problem without one)."""
    try:
        tree = ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval")
        steps: list[str] = []
        value = _walk(tree.body, steps)
    except (SyntaxError, _NotArithmetic, ZeroDivisionError):
        return None
    if _fmt(value) != answer.strip():
        return None
    work = ", ".join(steps) + ". " if steps else ""
    return f"{work}The final answer is \\boxed{{{answer.strip()}}}."


def _walk(node: ast.AST, steps: list[str]) -> Fraction:
    """The value of `node`, appending each binary operation to `steps` as it is computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _walk(node.operand, steps)
        if isinstance(node.op, ast.UAdd):
            return value
        if not isinstance(node.operand, ast.Constant):  # -( ... ): the sign change is a step too
            steps.append(f"-({_fmt(value)}) = {_fmt(-value)}")
        return -value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _walk(node.left, steps), _walk(node.right, steps)
        symbol, apply = _OPS[type(node.op)]
        value = apply(left, right)
        steps.append(f"{_fmt(left)} {symbol} {_fmt(right)} = {_fmt(value)}")
        return value
    raise _NotArithmetic(ast.dump(node))


def _fmt(value: Fraction) -> str:
    """An integer as itself, anything else as a short decimal (reasoning-gym's own style)."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.10g}"
