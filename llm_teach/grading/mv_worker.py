"""The math-verify side of the grading sandbox: `run` one job; `main` serves jobs over pipes.

`python -m llm_teach.grading.mv_worker` reads pickled jobs from stdin and writes each result to
its original stdout (anything math-verify or sympy prints goes to stderr instead, so it cannot
corrupt the protocol). The parent (`llm_teach.grading.sandbox`) kills the process when a job
overruns its deadline; that is why math-verify runs here without its own timeout, which
relies on `signal.alarm` and so only works on a main thread.

Jobs (tuples, all strings already in the form to parse):
    ("equal", gold, pred) -> bool: math-verify `verify(parse(gold), parse(pred))`, gold first.
    ("anchored", tail) -> str | None: the text of the first expression math-verify reads in
        the stated answer `tail` (see `extraction.math_verify_anchored`), None if none.
    ("clear_caches",) -> None: empty math-verify's and sympy's caches (for benchmarks).
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

# Both LaTeX ("\frac{1}{2}") and plain expressions ("1/2") parse.
_CONFIG: tuple | None = None


def _config() -> tuple:
    global _CONFIG
    if _CONFIG is None:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig

        _CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())
    return _CONFIG


def run(job: tuple, timeout: int | None = None) -> Any:
    """The result of one job; a failure inside math-verify is a False / None result.

    timeout: math-verify's own per-call timeout in seconds (None in the sandbox, where the
    parent's deadline applies; only usable on a main thread).
    """
    from math_verify import parse, verify

    if job[0] == "clear_caches":
        clear_caches()
        return None
    try:
        if job[0] == "equal":
            gold = parse(job[1], _config(), parsing_timeout=timeout)
            pred = parse(job[2], _config(), parsing_timeout=timeout)
            return bool(gold and pred and verify(gold, pred, timeout_seconds=timeout))
        if job[0] == "anchored":
            found = parse(job[1], _config(), fallback_mode="first_match",
                          extraction_mode="first_match", parsing_timeout=timeout)
            if len(found) == 2 and isinstance(found[1], str) and found[1].strip():
                return found[1].strip()  # [parsed value, the text it was parsed from]
            return None
    except Exception:  # math-verify catches its own errors; this is the last line of defence
        return False if job[0] == "equal" else None
    raise ValueError(f"unknown grading job {job[0]!r}")


def clear_caches() -> None:
    """Empty math-verify's parse caches and sympy's cache (a benchmark's cold start)."""
    from math_verify import parser
    from sympy.core.cache import clear_cache

    parser.parse_latex_cached.cache_clear()
    parser.parse_expr_cached.cache_clear()
    clear_cache()


def quiet_math_verify() -> None:
    """Silence math-verify's warnings: each repeats the whole input (1 MB for a long
    completion) and "timeout is disabled" is expected here; the parent logs timeouts, shortened."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)


def main() -> None:
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr, not into the protocol
    rx, tx = Connection(0, writable=False), Connection(out_fd, readable=False)
    quiet_math_verify()
    # Warm up before "ready": sympy's first parse and comparison in a process cost about a
    # second of lazy imports, which belong to the worker's start, not to the first job's budget.
    run(("equal", "$\\boxed{\\frac{x^2}{2}}$", "$\\boxed{0.5x^2}$"))
    tx.send("ready")
    while True:
        try:
            job = rx.recv()
        except (EOFError, OSError):  # the parent closed the pipe or exited
            return
        tx.send(run(job))


if __name__ == "__main__":
    main()
