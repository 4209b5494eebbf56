"""Numbers as values: the parsing under GSM8K grading and answer keys.

Never digit stripping (`re.sub(r"\\D", "", s)`): it turns "-5" into "5" and "1.5" into "15".
Numbers are parsed into values that keep their sign and decimal point (LaTeX fractions,
thousands separators, `$`, `%`, degrees and scientific notation understood), then compared with
a relative tolerance of `REL_TOL`.
"""

from __future__ import annotations

import math
import re

from llm_teach.grading.bounds import MAX_ANSWER_CHARS

REL_TOL = 1e-6  # numeric answers within this relative distance are the same answer


_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_SIGNED = rf"[-+]?(?:{_NUM})"
_VALUE = re.compile(
    rf"""\s*(?P<sign>[-+]?)\s*
    (?:
        (?P<whole>\d+)\s*\((?P<mnum>{_SIGNED})\)\s*/\s*\((?P<mden>{_SIGNED})\)  # 2\frac{1}{2}
      | \(?(?P<num>{_SIGNED})\)?\s*/\s*\(?(?P<den>{_SIGNED})\)?               # 3/4, \frac{3}{4}
      | (?P<dec>{_NUM})(?:[eE](?P<exp>[-+]?\d+)|\s*\*\s*10\s*\^\s*\(?(?P<exp10>[-+]?\d+)\)?)?
    )
    \s*%?""",
    re.VERBOSE,
)
# Scientific notation is part of a number ("2e400" is one number, not 2 then a word): reading
# only its leading digits graded an overflowing "2e400" as 2.
NUMBER_IN_TEXT = re.compile(rf"(?<![\w.])[-\u2212]?(?:{_NUM})(?:[eE][-+]?\d+)?(?:/\d+(?![\d.]))?")


def last_number(text: str) -> str | None:
    """The last number written in `text` ("-5", "1,000", "2.5", "3/4", "1e3"); "3-4" is 3 and 4."""
    found = NUMBER_IN_TEXT.findall(text)
    return found[-1] if found else None


def to_plain(s: str) -> str:
    """Rewrite the LaTeX that numbers come wrapped in as plain arithmetic text."""
    s = s.replace("\u2212", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])|\\[,!;:]|\\displaystyle", "", s)
    s = s.replace("{,}", ",").replace("\\ ", " ").replace("~", " ")
    text_command = r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}"
    for _ in range(3):  # \text{...} and friends: keep the words, drop the command
        s = re.sub(text_command, r" \1 ", s)
    s = s.replace("\\%", "%").replace("\\$", "").replace("$", "")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|\u00b0", "", s)
    for _ in range(3):
        s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"(\1)/(\2)", s)
    s = re.sub(r"\\times|\\cdot|\u00d7", "*", s)
    return s.replace("{", "").replace("}", "")


def _value(m: re.Match) -> float:
    def f(x: str) -> float:
        return float(x.replace(",", ""))

    if m.group("whole"):
        frac = f(m.group("mnum")) / f(m.group("mden"))
        value = f(m.group("whole")) + frac
    elif m.group("num"):
        value = f(m.group("num")) / f(m.group("den"))
    else:
        exp = m.group("exp") or m.group("exp10") or "0"
        value = f(m.group("dec")) * 10.0 ** int(exp)
    return -value if m.group("sign") == "-" else value


def number(s: str, strict: bool) -> float | None:
    """The number `s` denotes, or None (also for numbers without a finite value: `1e99999`).

    strict: all of `s` must be the number (`$`, `,` separators, `%`, degrees and a final
    `.` allowed). Otherwise the number may be followed by words ("18 dollars"), but not by
    another number ("1 2 3": a list is not its first number).
    """
    if len(s) > MAX_ANSWER_CHARS:
        return None
    plain = to_plain(s).strip()
    m = _VALUE.match(plain)
    if not m or not plain:
        return None
    rest = plain[m.end() :].strip()
    if strict and rest not in ("", "."):
        return None
    if rest[:1] and rest[0] in "^*/\\(+-=!":  # "2^10", "5\sqrt2", "3 + 4" are not numbers
        return None
    if re.match(r"[,;]?\s*\d", rest):  # "1 2 3", "1, 2"
        return None
    try:
        value = _value(m)
    except (ZeroDivisionError, OverflowError, ValueError):
        return None
    return value if math.isfinite(value) else None


def gsm_value(answer: str | None) -> float | None:
    """A GSM8K-style answer's value: the number after the last `=`, units and `$` ignored.

    "x = 18", "\\$18.00", "18 \\text{ dollars}" and "\\text{Janet makes } 18" are all 18.
    """
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return None
    answer = re.split(r"=|\\approx|\u2248", answer)[-1]
    value = number(answer, strict=False)
    if value is None:  # a number among words: only if it is the only one ("2e400" is one)
        numbers = NUMBER_IN_TEXT.findall(to_plain(answer))
        value = number(numbers[0], strict=True) if len(numbers) == 1 else None
    return value


def close(gold: float | None, pred: float | None) -> bool:
    if gold is None or pred is None:
        return False
    return math.isclose(gold, pred, rel_tol=REL_TOL, abs_tol=1e-9)

