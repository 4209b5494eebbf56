"""Cheap checks that refuse answers sympy could not finish with (`refusal`), and `shorten`.

The hard bound on a grade is the sandbox's deadline (`llm_teach.grading.sandbox`); these checks
exist so that the absurd inputs a sampling model does produce -- a 10^6-character answer, ten
thousand nested braces, `9^{9^{9^9}}`, `99999999!` -- are refused in microseconds instead of
costing a full time budget and a worker restart each. They are pure string scans, linear in the
answer, and deliberately generous: every MATH-500 gold answer is under 60 characters, nested
at most 2 deep, with no number over 7 digits. math-verify itself has no such limits (sympy
evaluates `9**(9**(9**9))` eagerly), so they are written here.
"""

from __future__ import annotations

import math
import re

MAX_ANSWER_CHARS = 2000  # longer answers are refused (numbers and math-verify alike)
MAX_NESTING = 30  # brackets ({[ nested deeper than this are refused
MAX_DIGITS = 1000  # a number that would have more decimal digits than this is refused
LOG_CHARS = 200  # how much of an input a log line quotes

# A tower of integer powers: 9^{9^{9^9}}, 10^{99999}, 2^3 (braces and spaces allowed).
_TOWER = re.compile(r"\d+(?:\s*\^\s*\{?\s*\d+)+")
_FACTORIAL = re.compile(r"(\d+)\s*!")
_GROUP_FACTORIAL = re.compile(r"[)}\]]\s*!")
_LITERAL = re.compile(r"\d+")


def refusal(answer: str) -> str | None:
    """Why `answer` is refused before any parsing ("too long", ...), or None if it may be graded."""
    if len(answer) > MAX_ANSWER_CHARS:
        return f"longer than {MAX_ANSWER_CHARS} characters"
    if nesting(answer) > MAX_NESTING:
        return f"brackets nested deeper than {MAX_NESTING}"
    if any(len(m.group(0)) > MAX_DIGITS for m in _LITERAL.finditer(answer)):
        return f"a number with more than {MAX_DIGITS} digits"
    if any(tower_digits(m.group(0)) > MAX_DIGITS for m in _TOWER.finditer(answer)):
        return f"a power with more than {MAX_DIGITS} digits"
    if any(factorial_digits(int(m.group(1))) > MAX_DIGITS for m in _FACTORIAL.finditer(answer)):
        return f"a factorial with more than {MAX_DIGITS} digits"
    if _GROUP_FACTORIAL.search(answer) and "^" in answer:
        return "a factorial of a power"  # (10^8)!: its size is not worth estimating
    return None


def nesting(text: str) -> int:
    """The deepest nesting of (, { and [ in `text` (unbalanced closers are ignored)."""
    depth = deepest = 0
    for c in text:
        if c in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")}]" and depth:
            depth -= 1
    return deepest


def tower_digits(tower: str) -> float:
    """Decimal digits of the integer power tower `tower` ("9^{9^9}"), evaluated right to left.

    Worked in log space (digits of a^v = v * log10(a)) and stopped as soon as a level passes
    MAX_DIGITS, so `9^{9^{9^9}}` costs four multiplications, not 9^387420489.
    """
    bases = [int(x) for x in _LITERAL.findall(tower)]
    log_value = math.log10(bases[-1]) if bases[-1] > 1 else 0.0  # log10 of the value so far
    for base in reversed(bases[:-1]):
        if base <= 1:
            log_value = 0.0  # 0^v and 1^v are at most 1
            continue
        if log_value > math.log10(MAX_DIGITS) + 2:  # the exponent alone has too many digits
            return math.inf
        log_value = 10**log_value * math.log10(base)
        if log_value > MAX_DIGITS:
            return math.inf
    return math.floor(log_value + 1e-9) + 1


def factorial_digits(n: int) -> float:
    """Decimal digits of n!, from log-gamma (no factorial is computed)."""
    return math.floor(math.lgamma(n + 1) / math.log(10) + 1e-9) + 1


def shorten(text: str, limit: int = LOG_CHARS) -> str:
    """`text` cut to `limit` characters for a log line, saying how long it really was."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
