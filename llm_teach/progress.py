"""One progress bar style for long work (generation, evaluation, stages), on stderr."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from llm_teach import interrupts

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int, done: int = 0) -> Iterator[Callable[[int], None]]:
    """Yield `advance(k)`. Work already done by an earlier run starts the bar at `done`.
    On a terminal this is a live bar; in logs (CI, nohup) a plain line at most every 30 s
    and at the end, so logs stay short but a stalled job is visible."""
    if not sys.stderr.isatty():
        state = {"done": done, "last": 0.0}
        start = time.time()

        def advance(k: int = 1) -> None:
            interrupts.check()  # a unit just finished: a swallowed Ctrl-C stops here
            state["done"] += k
            now = time.time()
            if now - state["last"] >= 30 or state["done"] >= total:
                state["last"] = now
                # One write with its newline (print writes the end separately): a Ctrl-C between
                # the two would glue the "interrupted" line to this one.
                sys.stderr.write(f"{description}: {state['done']}/{total} ({now - start:.0f}s)\n")
                sys.stderr.flush()

        yield advance
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(description, total=total, completed=done)

        def advance_bar(k: int = 1) -> None:
            interrupts.check()
            progress.update(task, advance=k)

        yield advance_bar
