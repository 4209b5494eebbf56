"""One pipeline step in a process of its own (`llm-teach run --jobs N`): its output goes to a log
file, its result comes back through a pipe, and its CPU time is its own.

Why processes and not threads: a step loads models and trains; torch's thread pools, the
training loop's signal handling and `accelerate` all assume a process to themselves, and a step
that runs out of memory must take only itself down. Why `spawn`: the parent has imported torch
(checking every step's config does), and forking a process that holds torch's thread pools can
deadlock the child; a fresh interpreter costs a few seconds per step, nothing beside a step's
minutes."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

# The start method; tests of the scheduler use "fork" so their stand-in step bodies reach the
# child (nothing in those bodies touches torch).
CONTEXT = "spawn"


@dataclass
class StepProcess:
    name: str
    process: multiprocessing.process.BaseProcess
    results: Connection
    log: Path

    def outcome(self) -> dict[str, Any] | None:
        """The step's result once the process has ended; None when it ended without one
        (killed, out of memory, or an unexpected error whose traceback is in the log)."""
        self.process.join()
        try:
            return self.results.recv() if self.results.poll() else None
        except (EOFError, OSError):
            return None
        finally:
            self.results.close()


def start_step(name: str, target: Callable[..., dict[str, Any]], args: tuple, log: Path) -> StepProcess:
    """Run `target(*args)` in a new process whose stdout and stderr (and those of anything it
    launches) append to `log`; its return value is sent back to the parent."""
    context = multiprocessing.get_context(CONTEXT)
    reader, writer = context.Pipe(duplex=False)
    log.parent.mkdir(parents=True, exist_ok=True)
    process = context.Process(target=_child, args=(target, args, str(log), writer), name=f"llm-teach step {name}")
    process.start()
    writer.close()  # the child holds the only writer: EOF (no result) when it dies
    return StepProcess(name, process, reader, log)


def wait_any(running: list[StepProcess]) -> list[StepProcess]:
    """Block until at least one of the processes has ended; return those that have."""
    wait([p.process.sentinel for p in running])
    return [p for p in running if not p.process.is_alive()]


def _child(target: Callable[..., dict[str, Any]], args: tuple, log: str, results: Connection) -> None:
    # dup2 on the descriptors (not only sys.stdout): what the step launches writes there too.
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(fd, 1), os.dup2(fd, 2)
    os.close(fd)
    # Line-buffered streams on those descriptors, whatever sys.stdout was in the parent.
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    # The log appends (a resumed step keeps its history), so each start is marked: a step re-run
    # under a changed definition would otherwise read as one run with two beginnings.
    print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {multiprocessing.current_process().name} started "
          f"(pid {os.getpid()}) ---", flush=True)
    results.send(target(*args))
    results.close()
