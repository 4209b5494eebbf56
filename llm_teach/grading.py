"""Answer extraction and verification: is this completion's final answer the gold answer?

Every number this project reports (pass@1, maj@k, rewards for GRPO/KDRL, the data
filters of LLM2LLM and STaT) goes through `grade`, so it is strict where a lenient grader
would invent accuracy and lenient where a strict one would hide it:

* Never an exact string match: "1,000", "1000.0" and "$1000" are one answer, and so are
  `\\dfrac{1}{2}`, `0.5` and `\\frac12`. String matching under-counts small models, which
  vary their formatting far more than their mathematics.
* Never digit stripping (`re.sub(r"\\D", "", s)`): it turns "-5" into "5" and "1.5" into
  "15". Numbers are parsed into values that keep their sign and decimal point, then
  compared with a relative tolerance of 1e-6.
* One answer per completion: the `####` line or the LAST `\\boxed{}` (brace-matched, so
  `\\boxed{\\frac{1}{2}}` survives). Grading "any number in the text" would reward a
  completion that merely mentions the gold value on the way to a wrong answer.
* MATH answers are compared by math-verify (`parse` then `verify`), which knows that
  `(x+1)^2 = x^2+2x+1` and that `[0,1)` is not `[0,1]`. `verify(gold, pred)` is not
  symmetric -- it simplifies assignments and turns relations into intervals on the gold
  side only (a gold `1<x<2` accepts the answer `(1,2)`; a gold `(1,2)` rejects the answer
  `1<x<2`), so the gold always goes first.
* reasoning-gym tasks are scored by the task's own `score_answer`; numeric golds use the
  same numeric comparison as GSM8K.

Benchmarks: "gsm8k", "math" / "math500", "rg:<task>" (any registered reasoning-gym task).

Example:
    >>> is_correct("so the answer is \\\\boxed{42}", "42", "gsm8k")
    True
    >>> grade("#### 5", "-5", "gsm8k")
    Grade(correct=False, extracted='5', method='hash', verifier='numeric')
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from llm_teach.errors import UserError

__all__ = ["Grade", "grade", "is_correct", "extract_answer", "answer_key", "last_boxed"]

REL_TOL = 1e-6  # numeric answers within this relative distance are the same answer
MATH_VERIFY_TIMEOUT = 5  # seconds per math-verify parse/verify call (main thread only)


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion.

    Attributes:
        correct: whether the extracted answer equals the gold answer.
        extracted: the answer text pulled from the completion, None when there is none.
        method: how it was pulled out: "hash" (a `#### x` line), "boxed" (last `\\boxed{}`
            or `\\fbox{}`), "answer_is" ("the answer is x" / "Answer: x"), "last_number",
            "math_verify_fallback" (MATH without a box: what math-verify reads after
            "the answer is" / "Answer:") or "none".
        verifier: how it was compared: "numeric", "math_verify", "rg_scorer" or "none".
    """

    correct: bool
    extracted: str | None
    method: str
    verifier: str = "none"


# --------------------------------------------------------------------------- public API


def is_correct(completion: str, gold: str, benchmark: str, meta: dict | None = None) -> bool:
    """True when the completion's final answer equals `gold` (see `grade`)."""
    return grade(completion, gold, benchmark, meta).correct


def grade(completion: str, gold: str, benchmark: str, meta: dict | None = None) -> Grade:
    """Extract the final answer from `completion` and compare it with `gold`.

    Args:
        completion: the model's output text.
        gold: the gold answer; for GSM8K it may be a whole solution ending in `#### 72`,
            for MATH a whole solution with a `\\boxed{}` (the last box is used).
        benchmark: "gsm8k", "math", "math500" or "rg:<task>".
        meta: the reasoning-gym entry's `metadata` (some scorers need it); may also carry
            the entry's "question".

    Returns:
        A `Grade`. Grading never raises on odd completions: a completion without an answer,
        an unparsable answer or a crashing scorer is simply incorrect.

    Raises:
        UserError: for an unknown benchmark, or an unknown reasoning-gym task whose
            scorer is needed (a non-numeric gold).
    """
    kind, task = _benchmark(benchmark)
    extracted, method = extract_answer(completion or "", benchmark)
    if extracted is None:
        return Grade(False, None, method, "none")
    if kind == "gsm8k":
        gold_value = _gsm_value(_gsm_gold(str(gold)))
        pred_value = _gsm_value(extracted)
        return Grade(_close(gold_value, pred_value), extracted, method, "numeric")
    if kind == "math":
        gold_answer = last_boxed(str(gold)) or str(gold)
        return Grade(_math_equal(gold_answer, extracted), extracted, method, "math_verify")
    # reasoning-gym: numbers by value, everything else by the task's own scorer.
    gold_value = _number(str(gold), strict=True) if gold is not None else None
    if gold_value is not None:
        return Grade(_close(gold_value, _gsm_value(extracted)), extracted, method, "numeric")
    return Grade(_rg_score(task, extracted, gold, meta), extracted, method, "rg_scorer")


def extract_answer(completion: str, benchmark: str) -> tuple[str | None, str]:
    """The final answer in `completion` and how it was found: `(answer, method)`.

    GSM8K: the last `#### x` line, else the last `\\boxed{}`, else the last number.
    MATH: the last `\\boxed{}`, else what math-verify reads after a "the (final) answer
    is" / "Answer:" anchor -- never the last expression of the working, which would grade
    intermediate steps. reasoning-gym: the last `\\boxed{}`, else "the answer
    is x" / "Answer: x", else the last number on the last line.

    Returns `(None, "none")` when there is no answer. `method` values are listed on `Grade`.
    """
    kind, _ = _benchmark(benchmark)
    text = completion or ""
    if kind == "gsm8k":
        hashed = _after_hashes(text)
        if hashed is not None:
            return hashed, "hash"
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    if kind == "math":
        anchored = _math_verify_anchored(text)
        return (anchored, "math_verify_fallback") if anchored else (None, "none")
    if kind == "rg":
        stated = _answer_is(text)
        if stated is not None:
            return stated, "answer_is"
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    number = _last_number(text)
    return (number, "last_number") if number is not None else (None, "none")


def answer_key(answer: str, benchmark: str) -> str:
    """A canonical key under which equivalent answers group together (for maj@k).

    Numbers become their value to 10 significant digits ("1,000", "1000.0" and "$1000" ->
    "1000"; "\\frac{3}{4}" and "0.75" -> "0.75"); for GSM8K units are dropped as in grading
    ("18 dollars" -> "18"). Anything else is the LaTeX with whitespace, `\\left`/`\\right`,
    thin spaces and surrounding `$` removed and `\\dfrac`/`\\tfrac` spelled `\\frac`.
    Equal keys mean equal answers; symbolically equal but differently written expressions
    (`(x+1)^2`, `x^2+2x+1`) keep different keys.
    """
    kind, _ = _benchmark(benchmark)
    value = _gsm_value(answer) if kind == "gsm8k" else _number(answer, strict=True)
    if value is not None:
        key = f"{value:.10g}"
        return "0" if key == "-0" else key
    return _normalize_latex(answer)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` in `text`, braces matched.

    Handles nesting (`\\boxed{\\frac{1}{2}}` -> `\\frac{1}{2}`), escaped braces and the
    brace-less `\\boxed 5`. A last box left unclosed (a truncated generation) gives None
    rather than an earlier box: the answer the model was writing is unknown.
    """
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)(?![a-zA-Z])", text)]
    if not starts:
        return None
    i = starts[-1]
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] != "{":  # "\boxed 5": up to the next space or `$`
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2  # skip escaped characters such as \{ and \}
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
        j += 1
    return None


# --------------------------------------------------------------------------- benchmarks


def _benchmark(benchmark: str) -> tuple[str, str | None]:
    """("gsm8k" | "math" | "rg", task)."""
    name = (benchmark or "").strip()
    if name.lower() == "gsm8k":
        return "gsm8k", None
    if name.lower() in ("math", "math500"):
        return "math", None
    if name.lower().startswith("rg:") and name[3:].strip():
        return "rg", name[3:].strip()
    raise UserError(
        f"unknown benchmark {benchmark!r}: expected 'gsm8k', 'math', 'math500' or 'rg:<task>'"
    )


def _after_hashes(text: str) -> str | None:
    """The answer on the last `#### x` line; a markdown heading (`#### Step 1`) is not one."""
    found = re.findall(r"####[ \t]*([-+\u2212$\\.\d][^\n]*)", text)
    return found[-1].strip() if found else None


def _gsm_gold(gold: str) -> str:
    """A GSM8K gold: the `####` answer of a full solution, else the string itself."""
    return _after_hashes(gold) or gold


_ANSWER_IS = re.compile(
    r"\banswer\**\s*(?:is\b\s*:?|:)\s*\**[ \t]*(?P<ans>[^\n]*\S)", re.IGNORECASE
)


def _answer_tail(text: str) -> str | None:
    """The rest of the line after the last "the answer is" / "Answer:" (bold allowed)."""
    found = list(_ANSWER_IS.finditer(text))
    return found[-1].group("ans").strip().strip("*").strip() if found else None


def _answer_is(text: str) -> str | None:
    """X from the last "the answer is X" / "Answer: X", without `$`, `**` or a final `.`."""
    answer = _answer_tail(text)
    if not answer:
        return None
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1]
    answer = answer.strip().strip("$").strip()
    return answer or None


# --------------------------------------------------------------------------- numbers

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
_NUMBER_IN_TEXT = re.compile(rf"(?<![\w.])[-\u2212]?(?:{_NUM})(?:/\d+(?![\d.]))?")


def _last_number(text: str) -> str | None:
    """The last number written in `text` ("-5", "1,000", "2.5", "3/4"); "3-4" is 3 and 4."""
    found = _NUMBER_IN_TEXT.findall(text)
    return found[-1] if found else None


def _to_plain(s: str) -> str:
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


def _number(s: str, strict: bool) -> float | None:
    """The number `s` denotes, or None.

    strict: all of `s` must be the number (`$`, `,` separators, `%`, degrees and a final
    `.` allowed). Otherwise the number may be followed by words ("18 dollars").
    """
    plain = _to_plain(s).strip()
    m = _VALUE.match(plain)
    if not m or not plain:
        return None
    rest = plain[m.end() :].strip()
    if strict and rest not in ("", "."):
        return None
    if rest[:1] and rest[0] in "^*/\\(+-=!":  # "2^10", "5\sqrt2", "3 + 4" are not numbers
        return None
    try:
        return _value(m)
    except (ZeroDivisionError, OverflowError, ValueError):
        return None


def _gsm_value(answer: str | None) -> float | None:
    """A GSM8K-style answer's value: the number after the last `=`, units and `$` ignored.

    "x = 18", "\\$18.00", "18 \\text{ dollars}" and "\\text{Janet makes } 18" are all 18.
    """
    if answer is None:
        return None
    answer = re.split(r"=|\\approx|\u2248", answer)[-1]
    value = _number(answer, strict=False)
    if value is None:  # a number among words: only if it is the only one
        numbers = _NUMBER_IN_TEXT.findall(_to_plain(answer))
        value = _number(numbers[0], strict=True) if len(numbers) == 1 else None
    return value


def _close(gold: float | None, pred: float | None) -> bool:
    if gold is None or pred is None:
        return False
    return math.isclose(gold, pred, rel_tol=REL_TOL, abs_tol=1e-9)


def _normalize_latex(s: str) -> str:
    s = s.strip().strip("$").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])|\\[,!;: ]|\\displaystyle|\s+", "", s)
    return s.rstrip(".")


# --------------------------------------------------------------------------- MATH

# Both LaTeX ("\frac{1}{2}") and plain expressions ("1/2") parse.
_MATH_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())


def _timeout() -> int | None:
    """math-verify's timeout, or None off the main thread.

    math-verify times out with `signal.alarm`, and `signal.signal` raises ValueError
    ("signal only works in main thread") anywhere else -- math-verify re-raises it instead
    of grading. So threads (a thread-pool evaluator, a trainer's reward worker) run without
    a timeout; math-verify logs once that the caller must bound the time itself. On the
    main thread note that the alarm replaces any pending SIGALRM (pytest-timeout's
    "signal" method uses one).
    """
    return MATH_VERIFY_TIMEOUT if threading.current_thread() is threading.main_thread() else None


def _for_math_verify(answer: str) -> str:
    """An answer in the form math-verify parses best: boxed inside `$...$`.

    Plain scientific notation is rewritten first: math-verify reads `1.5e3` as 1.5*e*3.
    """
    answer = re.sub(r"^\s*([-+]?\d+(?:\.\d+)?)[eE]([-+]?\d+)\s*$", r"\1\\times 10^{\2}", answer)
    return f"$\\boxed{{{answer}}}$"


def _math_equal(gold: str, pred: str) -> bool:
    """math-verify equivalence of two answer strings, gold first; False on any failure."""
    timeout = _timeout()
    try:
        gold_parsed = parse(_for_math_verify(gold), _MATH_CONFIG, parsing_timeout=timeout)
        pred_parsed = parse(_for_math_verify(pred), _MATH_CONFIG, parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # math-verify catches its own errors; this is the last line of defence
        return False


def _math_verify_anchored(text: str) -> str | None:
    """The answer stated after the last "answer is" / "Answer:" anchor, read by math-verify.

    Only the rest of that line is parsed ("The final answer is $\\frac12$. I hope it is
    correct." -> `\\frac{1}{2}`). math-verify's own anchors are looser ("answer" followed
    within 50 characters by any number, so "let's answer this: 3 apples..." yields 3) and
    without anchors it takes the last expression of the working; both grade intermediate
    steps as answers. `first_match` keeps a failed parse from wandering to other matches.
    """
    tail = _answer_tail(text)
    if not tail:
        return None
    try:
        found = parse(
            tail,
            _MATH_CONFIG,
            fallback_mode="first_match",
            extraction_mode="first_match",
            parsing_timeout=_timeout(),
        )
    except Exception:
        found = []
    if len(found) == 2 and isinstance(found[1], str) and found[1].strip():
        return found[1].strip()  # [parsed value, the text it was parsed from]
    # math-verify found no expression ("(C).", "\\text{Evelyn}" outside `$`): the whole
    # stated answer is the candidate, and `_math_equal` boxes it for comparison.
    return _answer_is(text)


# --------------------------------------------------------------------------- reasoning-gym


@lru_cache(maxsize=None)
def _rg_scorer(task: str):
    import reasoning_gym  # imported here: it is slow to import and only rg:* needs it
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS:
        raise UserError(f"unknown reasoning-gym task {task!r} (benchmark 'rg:{task}')")
    return reasoning_gym.get_score_answer_fn(task)


def _rg_score(task: str, answer: str, gold, meta: dict | None) -> bool:
    """The task's own `score_answer`; correct iff it gives full marks."""
    meta = meta or {}
    entry = {"question": meta.get("question", ""), "answer": gold, "metadata": meta}
    try:
        return float(_rg_scorer(task)(answer, entry)) >= 1.0
    except UserError:
        raise
    except Exception:  # scorers index metadata and parse freely; a crash is a wrong answer
        return False
