"""`OUT/pipeline.json`, the state of a pipeline run (which steps completed, failed or were
skipped, with their results), and setting aside a step output that no longer answers its step.
Kept apart from `llm_teach.pipeline`, which decides what runs, so the file format has one home."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_teach.data.jsonl import write_json_atomic
from llm_teach.errors import UserError


def save_state(path: Path, recipe: Path, name: str, done: dict[str, Any]) -> None:
    """`OUT/pipeline.json`: what each step is and whether it completed; its `kind` marks OUT as
    a pipeline's, so no other command writes into it (`runs.directory.MARKERS`)."""
    write_json_atomic(path, {"kind": "pipeline", "pipeline": str(recipe), "name": name, "steps": done})


def read_state(path: Path) -> dict[str, Any]:
    """OUT/pipeline.json (the steps a previous run finished), {} for a new OUT; checks that OUT
    can be a directory first, so a bad --out is one line before anything runs."""
    from llm_teach.runs.directory import check_out_dir

    check_out_dir(path.parent)
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: invalid JSON or not UTF-8
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("steps", {}), dict):
        raise UserError(f"{path}: unreadable pipeline state; use a new --out (or delete it)")
    return state


def set_aside(path: Path) -> Path:
    n = 1
    while (stale := path.with_name(f"{path.name}.stale-{n}")).exists():
        n += 1
    return path.rename(stale)
