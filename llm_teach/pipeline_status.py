"""`llm-teach run --status`: where a pipeline run stands, step by step, judged against the
pipeline file as it is now. Kept apart from `llm_teach.pipeline` (which decides what runs) but
built on its schedule, so "would a run skip this step" has one answer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llm_teach.pipeline import Pipeline, _Schedule, _steps_read
from llm_teach.runs.pipeline_state import is_held


def pipeline_status(pipeline: Pipeline, out: str | Path) -> list[dict[str, Any]]:
    """Where a run of PIPELINE into OUT stands, without running or changing anything (`llm-teach
    run --status`): one `{name, status, result}` per step, in file order, where status is

    - `complete`: completed with this definition and these inputs (a run would skip it);
    - `stale`: completed, but its definition or an input changed since (a run redoes it);
    - `running` / `interrupted`: started and not finished, by a run that holds OUT now / that
      ended (the next run resumes it);
    - `failed` / `skipped` (an input did not complete) / `pending` (never started).

    Only `complete` results describe the pipeline as written: a grid whose file changed keeps
    its old steps' records until they run again, and a table must not mix them in. Reading
    while another run holds OUT is safe: pipeline.json is replaced atomically."""
    out = Path(out)
    schedule = _Schedule(pipeline, out, lambda *_: None, False, set(), 1, False)
    held = is_held(out)
    rows = []
    for step in pipeline.steps:
        reads = _steps_read(step)
        previous = schedule.done.get(step.name) or {}
        status = previous.get("status", "pending")
        if status in ("complete", "running", "failed"):
            # A record answers the step as written only if its fingerprint is the one the step has
            # now; a step whose inputs are not all current cannot be current (its fingerprint
            # includes theirs). Otherwise it is another definition's record: the next run redoes it.
            current = reads <= schedule.results.keys() and \
                previous.get("fingerprint") == schedule._fingerprint(step, reads)[1]
            if not current:
                status = "stale"
            elif status == "complete":
                schedule.fingerprints[step.name] = previous["fingerprint"]
                schedule.results[step.name] = previous["result"]
            elif status == "running" and not (held and _alive(previous.get("run_pid"))):
                status = "interrupted"  # no run holds OUT, or the one that does waits to resume it
        rows.append({"name": step.name, "status": status,
                     "result": previous.get("result") if status == "complete" else None,
                     "error": previous.get("error")})
    return rows


def _alive(pid: int | None) -> bool:
    """Whether the run that started a step is still running (no pid recorded: assume so)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
