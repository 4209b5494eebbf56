"""Finding the one final answer in a completion (`extract_answer`, `last_boxed`).

One answer per completion: the `####` line or the LAST `\\boxed{}` (brace-matched, so
`\\boxed{\\frac{1}{2}}` survives), else an explicit "the answer is" statement. Grading "any
number in the text" would reward a completion that merely mentions the gold value on the way
to a wrong answer, and taking the last expression of the working would grade intermediate steps.
"""

from __future__ import annotations

import re

from llm_teach.errors import UserError
from llm_teach.grading import sandbox
from llm_teach.grading.bounds import MAX_ANSWER_CHARS
from llm_teach.grading.numbers import last_number


def extract_answer(completion: str, benchmark: str) -> tuple[str | None, str]:
    """The final answer in `completion` and how it was found: `(answer, method)`.

    GSM8K: the last `#### x` line, else the last `\\boxed{}`, else the last number.
    MATH: the last `\\boxed{}`, else what math-verify reads after a "the (final) answer
    is" / "Answer:" anchor -- never the last expression of the working, which would grade
    intermediate steps. reasoning-gym: the last `\\boxed{}`, else "the answer
    is x" / "Answer: x", else the last number on the last line.

    Returns `(None, "none")` when there is no answer, or when the last `\\boxed{` is never
    closed (a truncated generation: the answer it was writing is unknown, and an earlier
    number is not it). `method` values are listed on `Grade`. Never raises on odd text: a
    MATH answer whose reading runs out of time counts as no answer (see `grade`, which
    reports the timeout).
    """
    try:
        return extract_within(completion, benchmark, sandbox.Budget())
    except sandbox.GradingTimeout:
        return None, "none"


def extract_within(completion: str, benchmark: str, budget: sandbox.Budget) -> tuple[str | None, str]:
    """`extract_answer` within `budget`; raises `sandbox.GradingTimeout` when it runs out."""
    kind, _ = benchmark_kind(benchmark)
    text = completion or ""
    if kind == "gsm8k":
        hashed = after_hashes(text)
        if hashed is not None:
            return hashed, "hash"
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    if _BOX.search(text):  # a box was opened but never closed
        return None, "none"
    if kind == "math":
        anchored = math_verify_anchored(text, budget)
        return (anchored, "math_verify_fallback") if anchored else (None, "none")
    if kind == "rg":
        stated = answer_is(text)
        if stated is not None:
            return stated, "answer_is"
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    number = last_number(text)
    return (number, "last_number") if number is not None else (None, "none")


_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` in `text`, braces matched.

    Handles nesting (`\\boxed{\\frac{1}{2}}` -> `\\frac{1}{2}`), escaped braces and the
    brace-less `\\boxed 5`. A last box left unclosed (a truncated generation) gives None
    rather than an earlier box: the answer the model was writing is unknown.
    """
    starts = [m.end() for m in _BOX.finditer(text)]
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


def benchmark_kind(benchmark: str) -> tuple[str, str | None]:
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


def after_hashes(text: str) -> str | None:
    """The answer on the last `#### x` line; a markdown heading (`#### Step 1`) is not one."""
    found = re.findall(r"####[ \t]*([-+\u2212$\\.\d][^\n]*)", text)
    return found[-1].strip() if found else None


_ANCHOR = re.compile(r"\banswer\**\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_SPACE = re.compile(r"\s*")


def answer_tail(text: str) -> str | None:
    """The rest of the line after the last "the answer is" / "Answer:" (bold allowed).

    The stated answer starts at the first non-space after the anchor (possibly on a later
    line) and runs to the end of its line. Found by a scan rather than one regex: the regex
    this replaces (`...\\s*\\**[ \\t]*([^\\n]*\\S)`) backtracked cubically, and 500 spaces
    after "the answer is" took 84 s. An anchor inside a stated answer is part of that
    answer, as with the regex's non-overlapping matches.
    """
    found, pos = None, 0
    while (m := _ANCHOR.search(text, pos)) is not None:
        start = _SPACE.match(text, m.end()).end()
        if start == len(text):
            break
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        found, pos = text[start:end], end
    if found is None:
        return None
    return found.lstrip("*").lstrip(" \t").strip().strip("*").strip()


def answer_is(text: str) -> str | None:
    """X from the last "the answer is X" / "Answer: X", without `$`, `**` or a final `.`."""
    answer = answer_tail(text)
    if not answer:
        return None
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1]
    answer = answer.strip().strip("$").strip()
    return answer or None


def math_verify_anchored(text: str, budget: sandbox.Budget) -> str | None:
    """The answer stated after the last "answer is" / "Answer:" anchor, read by math-verify.

    Only the rest of that line is parsed ("The final answer is $\\frac12$. I hope it is
    correct." -> `\\frac{1}{2}`). math-verify's own anchors are looser ("answer" followed
    within 50 characters by any number, so "let's answer this: 3 apples..." yields 3) and
    without anchors it takes the last expression of the working; both grade intermediate
    steps as answers. `first_match` keeps a failed parse from wandering to other matches.
    math-verify runs in the grading sandbox within `budget` (raises `sandbox.GradingTimeout`);
    a stated answer too long to parse is passed on whole, for the verifier to refuse.
    """
    tail = answer_tail(text)
    if not tail:
        return None
    if len(tail) <= MAX_ANSWER_CHARS:
        found = sandbox.call(("anchored", tail), budget)
        if found:
            return found
    # math-verify found no expression ("(C).", "\\text{Evelyn}" outside `$`): the whole
    # stated answer is the candidate, and the verifier boxes it for comparison.
    return answer_is(text)
