"""Keyed once-only work: run each piece of work at most once across kills and re-runs.

The work is cut into groups of FIXED composition (computed from the whole input, never from
what is left to do) and every finished group's records are appended to a crash-safe
`RecordLog` in one write. A re-run skips every key already in the log, so a run killed at any
point redoes at most the group it was in, and because a group is the same on every run, the
redone records are the ones an uninterrupted run would have written.

Stages log one record per work unit (a group of one unit); evaluation logs one record per
problem (a group is a chunk of problems generated in one call).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from llm_teach.data.jsonl import RecordLog
from llm_teach.progress import progress_bar

T = TypeVar("T")


def work_once(log: RecordLog, groups: Sequence[Sequence[T]], key: Callable[[T], str],
              work: Callable[[list[T]], list[dict[str, Any]]], description: str,
              stream: Callable[[list[list[T]], Callable[[list[dict[str, Any]]], None]], None] | None = None,
              ) -> list[dict[str, Any]]:
    """Call `work(todo)` for each group with the items whose `key` is not yet in `log`
    (skipping groups with none), append its records (each carrying its item's key), then
    publish the log in item order and return all records, earlier runs' included.

    With `stream`, the groups left are handed over together instead: `stream(todo, emit)` works
    on them at once (an HTTP backend keeps its requests in flight across groups) and calls
    `emit(records)` once per group, in order, each appended as it comes, as in the loop."""
    done = log.keys()  # what earlier runs finished, read once: a group's todo never shrinks mid-run
    todo = [[item for item in group if key(item) not in done] for group in groups]
    total = sum(map(len, groups))
    pending = [items for items in todo if items]
    with progress_bar(description, total=total, done=total - sum(map(len, todo))) as advance:
        if stream is None:
            for items in pending:
                log.append(work(items))
                advance(len(items))
        else:
            sizes = iter(map(len, pending))

            def emit(records: list[dict[str, Any]]) -> None:
                log.append(records)
                advance(next(sizes))

            stream(pending, emit)
    return log.finalize(order=[key(item) for group in groups for item in group])
