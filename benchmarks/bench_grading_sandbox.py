"""Cost per MATH grade of the bounded grader against calling math-verify directly.

What it answers: `grade` now runs math-verify in killable worker processes (the only bound that
holds off the main thread); what does that cost per grade on real MATH-500 answers? Three
graders over the same completions, each with cold math-verify caches, interleaved per repeat:

* direct    -- the previous code path: the same extraction, math-verify `parse`/`verify` in
               this process with its own signal timeouts (main thread only, 5 s per call).
* grade     -- `llm_teach.grading.grade` as shipped: integer pairs compared without sympy,
               everything else one pipe round trip per math-verify job.
* sandboxed -- every pair through the worker, no integer fast path: the round trip alone.

Workloads: `solutions` (each reference solution against its own gold), `neighbours` (against
the next problem's gold: mostly wrong answers) and `stated` ("The final answer is $gold$.", no
box: the anchored math-verify read, i.e. two jobs per grade). Worker start-up is measured on
its own (it is paid once per process, and again only after a kill).

    .venv/bin/python benchmarks/bench_grading_sandbox.py [--repeats 3] [--limit 500]

Prints `RATIO name value` lines (time per grade relative to direct; below 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_openai_throughput import machine  # noqa: E402  (same machine line as the other benchmark)

from llm_teach.grading import grade, last_boxed, sandbox  # noqa: E402
from llm_teach.grading.extraction import answer_tail  # noqa: E402
from llm_teach.grading.mv_worker import clear_caches, quiet_math_verify, run  # noqa: E402
from llm_teach.grading.verification import _for_math_verify  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "math500" / "test.jsonl"


def workloads(path: Path, limit: int) -> dict[str, list[tuple[str, str]]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:limit]
    answers = [r["answer"] for r in rows]
    return {
        "solutions": [(r["solution"], r["answer"]) for r in rows],
        "neighbours": [(r["solution"], a) for r, a in zip(rows, answers[1:] + answers[:1])],
        "stated": [(f"The final answer is ${a}$. I hope it is correct.", a) for a in answers],
    }


def direct(completion: str, gold: str) -> bool:
    """The grader before the sandbox: math-verify in-process with its signal timeouts."""
    pred = last_boxed(completion)
    if pred is None:
        tail = answer_tail(completion)
        pred = run(("anchored", tail), timeout=5) if tail else None
    if pred is None:
        return False
    gold = last_boxed(gold) or gold
    return run(("equal", _for_math_verify(gold), _for_math_verify(pred)), timeout=5)


def sandboxed(completion: str, gold: str) -> bool:
    """Every job through the worker, no integer fast path."""
    budget = sandbox.Budget()
    pred = last_boxed(completion)
    if pred is None:
        tail = answer_tail(completion)
        pred = sandbox.call(("anchored", tail), budget) if tail else None
    if pred is None:
        return False
    gold = last_boxed(gold) or gold
    return sandbox.call(("equal", _for_math_verify(gold), _for_math_verify(pred)), budget)


def cold_caches() -> None:
    """Empty math-verify's and sympy's caches, here and in the worker. The worker is kept, as
    in real use: restarting it would charge the direct grader's warm lazy imports to it."""
    clear_caches()
    sandbox.call(("clear_caches",), sandbox.Budget())


def worker_cpu_seconds() -> float:
    """CPU time used so far by the sandbox's worker processes (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for worker in sandbox._pool.idle:
        try:
            fields = Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def per_grade_ms(fn, pairs, results: list) -> tuple[float, float]:
    """(wall, CPU of this process and the workers) milliseconds per grade, caches cold."""
    cold_caches()
    wall, cpu = time.perf_counter(), time.process_time() + worker_cpu_seconds()
    results.append([bool(fn(c, g)) for c, g in pairs])
    wall, cpu = time.perf_counter() - wall, time.process_time() + worker_cpu_seconds() - cpu
    return wall / len(pairs) * 1000, cpu / len(pairs) * 1000


def startup_seconds() -> float:
    sandbox._pool.close()
    started = time.perf_counter()
    sandbox.call(("equal", "$1$", "$1$"), sandbox.Budget())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=500)
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} not found")
    quiet_math_verify()
    run(("equal", "$\\boxed{\\frac{x^2}{2}}$", "$\\boxed{0.5x^2}$"), timeout=5)  # warm this process too
    load = os.getloadavg()[0]
    print(f"# {machine()}; load average {load:.1f} at start")
    graders = {"direct": direct, "grade": lambda c, g: grade(c, g, "math").correct, "sandboxed": sandboxed}
    for pairs in workloads(DATA, args.limit).values():  # lazy imports in both processes, before timing
        for completion, gold in pairs[:50]:
            direct(completion, gold), sandboxed(completion, gold)
    for name, pairs in workloads(DATA, args.limit).items():
        times: dict[str, list[tuple[float, float]]] = {g: [] for g in graders}
        verdicts: list = []
        for _ in range(args.repeats):
            for grader, fn in graders.items():
                times[grader].append(per_grade_ms(fn, pairs, verdicts))
        agree = all(v == verdicts[0] for v in verdicts)
        wall = {g: statistics.median(t[0] for t in ts) for g, ts in times.items()}
        cpu = {g: statistics.median(t[1] for t in ts) for g, ts in times.items()}
        print(f"{name}: {len(pairs)} grades, {sum(verdicts[0])} correct, verdicts agree: {agree}; ms/grade "
              + ", ".join(f"{g} {wall[g]:.2f} wall {cpu[g]:.2f} cpu" for g in graders))
        for grader in ("grade", "sandboxed"):
            print(f"RATIO {grader}_vs_direct_{name}_wall {wall[grader] / wall['direct']:.2f}")
            print(f"RATIO {grader}_vs_direct_{name}_cpu {cpu[grader] / cpu['direct']:.2f}")
    trips = []
    for _ in range(300):
        started = time.perf_counter()
        sandbox.call(("anchored", ""), sandbox.Budget())
        trips.append(time.perf_counter() - started)
    print(f"round trip of an empty job: median {statistics.median(trips) * 1000:.3f} ms, "
          f"mean {statistics.mean(trips) * 1000:.3f} ms")
    starts = [startup_seconds() for _ in range(3)]
    print(f"worker start-up (python + math-verify import + warm-up): median {statistics.median(starts):.2f} s")
    out: list = []
    worker = threading.Thread(target=lambda: out.append(grade("\\boxed{\\binom{1000000}{500000}}", "7", "math")))
    started = time.perf_counter()
    worker.start()
    worker.join()
    print(f"a grade that overruns (from a thread): {time.perf_counter() - started:.2f} s, {out[0]}")
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
