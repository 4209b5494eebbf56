"""`OUT/pipeline.json`, the state of a pipeline run (which steps completed, failed or were
skipped, with their results), and setting aside a step output that no longer answers its step.
Kept apart from `llm_teach.pipeline`, which decides what runs, so the file format has one home."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold OUT for one `llm-teach run` at a time: two runs on one OUT would both start its next
    step and overwrite each other's pipeline.json. An advisory lock on OUT itself (flock on the
    directory: no lock file left behind), released by the kernel when the process ends however
    it ends, so a crash leaves nothing to clean up. Call it after every check of the input, since
    it creates OUT."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (the one-run-per-OUT rule is then the user's)
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{out}: another `llm-teach run` is running into this directory; wait for it, "
                            "or use another --out") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def is_held(out: Path) -> bool:
    """Whether a `llm-teach run` holds OUT now (see `exclusive`): a shared lock is refused
    while the exclusive one is held; taken and dropped at once, so the holder never notices."""
    try:
        import fcntl
    except ImportError:
        return False
    if not out.is_dir():
        return False
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
