"""One progress bar style for long work (generation, evaluation, stages), on stderr."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int, done: int = 0) -> Iterator[Callable[[int], None]]:
    """Yield `advance(k)`. Work already done by an earlier run starts the bar at `done`.
    Off a terminal (CI logs) rich prints nothing per step, so logs stay short."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(description, total=total, completed=done)
        yield lambda k=1: progress.update(task, advance=k)
