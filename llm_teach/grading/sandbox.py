"""math-verify behind a hard deadline that holds in any thread: `call(job, budget)`.

math-verify bounds its own time with `signal.alarm`, which only works on a main thread; from a
worker thread (a thread-pool evaluator, a server, a library user) sympy could spend minutes on
`9^{9^{9^9}}` or a 10^6-character answer, and nothing can interrupt a thread inside sympy. So
jobs run in small persistent worker processes (`llm_teach.grading.mv_worker`), and a job that
outlives its budget has its process killed and replaced: the caller gets `GradingTimeout`,
never a hang. A process pool from the standard library cannot do this (`concurrent.futures`
cannot kill one task; `multiprocessing` spawn/forkserver re-import the caller's `__main__`
and refuse to start from daemonic processes), hence this module.

The cost per job is one pipe round trip (see benchmarks/bench_grading_sandbox.py); the
`bounds` pre-checks and the integer fast path in `verification` keep most grades away from it.
Workers are plain subprocesses in their own session (a terminal's Ctrl-C reaches only the
parent) that exit when the parent closes their stdin, at the latest when the parent exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import site
import subprocess
import sys
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from llm_teach.grading.bounds import refusal, shorten

GRADE_SECONDS = 5.0  # the whole budget of one grade, extraction and comparison together
STARTUP_SECONDS = 120.0  # a worker's python + sympy import; not charged to any grade
MAX_WORKERS = 2  # worker processes at most (threads grading at once share them)

logger = logging.getLogger(__name__)
_stats: Counter = Counter()
_stats_lock = threading.Lock()


class GradingTimeout(Exception):
    """A job ran out of its budget (its worker was killed) or could not get a worker in time."""


class SandboxUnavailable(Exception):
    """No worker process could be started (no usable `sys.executable`, a failed import)."""


class Budget:
    """The time left to one grade: a deadline that worker startup pushes back."""

    def __init__(self, seconds: float | None = None):
        self.seconds = GRADE_SECONDS if seconds is None else seconds  # read now: tests lower it
        self.deadline = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def extend(self, seconds: float) -> None:
        self.deadline += seconds


def count(event: str) -> None:
    with _stats_lock:
        _stats[event] += 1


def stats() -> dict[str, int]:
    """Counts since the process started: "timeouts" (jobs killed or never served within their
    budget), "refused" (answers the `bounds` checks rejected), "worker_starts"."""
    with _stats_lock:
        return {key: _stats[key] for key in ("timeouts", "refused", "worker_starts")}


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_source_root(), os.environ.get("PYTHONPATH")])))
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "llm_teach.grading.mv_worker"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                         start_new_session=True)
        except (OSError, ValueError) as exc:
            raise SandboxUnavailable(str(exc)) from exc
        self.tx = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.rx = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.ready = False
        count("worker_starts")

    def wait_ready(self) -> None:
        try:
            if self.rx.poll(STARTUP_SECONDS) and self.rx.recv() == "ready":
                self.ready = True
                return
        except (EOFError, OSError):
            pass
        self.kill()
        raise SandboxUnavailable(f"the grading worker did not start within {STARTUP_SECONDS:.0f} s")

    def call(self, job: tuple, seconds: float) -> Any:
        self.tx.send(job)
        if not self.rx.poll(seconds):
            raise GradingTimeout
        return self.rx.recv()

    def kill(self) -> None:
        for conn in (self.tx, self.rx):
            conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _source_root() -> str | None:
    """The directory holding llm_teach/ when it is a source checkout, so `-m` finds the worker
    module in the child as in this process; None for an installed copy (putting site-packages
    on PYTHONPATH would place it before the standard library)."""
    root = Path(__file__).resolve().parents[2]
    sites = [*site.getsitepackages(), site.getusersitepackages()]
    return None if any(Path(d).resolve() == root for d in sites) else str(root)


class _Pool:
    """Up to MAX_WORKERS workers, started on demand; a killed one is replaced at once so the
    next grade finds it (mostly) imported. `broken` once a worker failed to start: later jobs
    go straight to the in-process fallback instead of paying a failed start each."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.size = 0
        self.broken = False

    def checkout(self, budget: Budget) -> _Worker:
        with self.cond:
            while not self.idle and self.size >= MAX_WORKERS and not self.broken:
                if budget.remaining() <= 0:
                    raise GradingTimeout
                self.cond.wait(budget.remaining())
            if self.broken:
                raise SandboxUnavailable("the grading worker could not be started")
            if self.idle:
                return self.idle.pop()
            worker = _Worker()
            self.size += 1
            return worker

    def checkin(self, worker: _Worker | None, broken: bool = False) -> None:
        """Return `worker`, or None for a slot whose worker died (a replacement is started)."""
        with self.cond:
            self.broken = self.broken or broken
            if worker is None and not self.broken:
                try:
                    worker = _Worker()
                except SandboxUnavailable:
                    self.broken = True
            if worker is None:
                self.size -= 1
            else:
                self.idle.append(worker)
            self.cond.notify_all()

    def close(self) -> None:
        """Stop the idle workers (at exit; busy ones are stopped when their callers return them)."""
        with self.cond:
            for worker in self.idle:
                worker.kill()
            self.size -= len(self.idle)
            self.idle = []


_pool = _Pool()
_fallback_warned = False
_EXPIRED = object()


def _forget_pool_in_child() -> None:
    # A forked child (a DataLoader worker) must not share its parent's pipes.
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_forget_pool_in_child)
atexit.register(lambda: _pool.close())


def call(job: tuple, budget: Budget) -> Any:
    """Run `job` (see `mv_worker`) in a worker within `budget`.

    Raises GradingTimeout (counted, and logged with the input shortened) when it cannot finish
    in time. Where no worker process can be started at all, runs math-verify in this process
    with its own signal timeout -- a bound only on the main thread -- and warns once.
    """
    try:
        worker = _pool.checkout(budget)
    except GradingTimeout:
        _timed_out(job, budget)
    except SandboxUnavailable as exc:
        return _in_process(job, budget, exc)
    try:
        if not worker.ready:
            started = time.monotonic()
            worker.wait_ready()
            budget.extend(time.monotonic() - started)
        remaining = budget.remaining()
        result = worker.call(job, remaining) if remaining > 0 else _EXPIRED
    except GradingTimeout:
        worker.kill()
        _pool.checkin(None)
        _timed_out(job, budget)
    except SandboxUnavailable as exc:  # its python or its imports failed
        _pool.checkin(None, broken=True)
        return _in_process(job, budget, exc)
    except (EOFError, OSError):  # the worker died mid-job (out of memory, killed from outside)
        worker.kill()
        _pool.checkin(None)
        _timed_out(job, budget)
    except BaseException:  # Ctrl-C mid-job: the worker is still busy, so it cannot be reused
        worker.kill()
        _pool.checkin(None)
        raise
    _pool.checkin(worker)
    if result is _EXPIRED:  # used up before the job was sent (e.g. by the extraction)
        _timed_out(job, budget)
    return result


def refuse_absurd(answer: str) -> None:
    """Raise GradingTimeout (counted as "refused", logged shortened) for an answer that
    `bounds.refusal` says no parser could finish with; it never reaches a worker."""
    reason = refusal(answer)
    if reason is not None:
        count("refused")
        logger.warning("grading: refused %s unparsed (%s); graded incorrect", shorten(answer), reason)
        raise GradingTimeout


def _timed_out(job: tuple, budget: Budget) -> None:
    count("timeouts")
    logger.warning("grading: math-verify ran out of its %.0f s budget on %s; graded incorrect",
                   budget.seconds, shorten(job[-1]))
    raise GradingTimeout


def _in_process(job: tuple, budget: Budget, reason: Exception) -> Any:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        logger.warning("grading: no worker process (%s); running math-verify in-process, "
                       "bounded only on the main thread", reason)
    from llm_teach.grading.mv_worker import quiet_math_verify, run

    quiet_math_verify()
    on_main = threading.current_thread() is threading.main_thread()
    return run(job, timeout=max(1, round(budget.remaining())) if on_main else None)
