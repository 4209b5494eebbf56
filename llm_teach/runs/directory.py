"""OUT as the home of one run: what run it is, refusal of another run's directory, the manifest.

Every command that writes an output directory resumes into it when re-run with the same
`--out`. That is only safe when the directory holds the SAME run: resuming a run with another
config, model or prompt would mix two experiments in one output. So a run states its identity
(the manifest sections that say which run it is, e.g. stage + config + models + prompts, or
model + weights + config) and `claim` compares it with the manifest already in OUT before
anything is written; a difference is a one-line `UserError` naming the first changed key.

The manifest carries a `status` ("running", then "complete") so a caller can tell a finished
run (nothing to do) from an interrupted one (resume it). Sections are written in the order the
caller passes them; `write_manifest` adds command, versions, host and the time, and redacts
secrets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_teach.errors import UserError
from llm_teach.runs.manifest import write_manifest


def check_out_dir(out: str | Path) -> None:
    """Fail now, in one line, if OUT cannot hold a run: OUT (or a folder above it) is a file, or
    OUT holds an unreadable manifest.json. Commands call this before loading any model, and it
    creates nothing, so a bad --out costs a second and leaves no trace."""
    out = Path(out)
    for path in (out, *out.parents):
        if path.is_dir():
            break
        if path.exists() or path.is_symlink():  # a file, or a dangling link, where a folder must be
            where = "is a file" if path == out else f"cannot be created: {path} is a file"
            raise UserError(f"{out}: {where}; --out must be a directory")
    RunDirectory(out, {}).previous()


class RunDirectory:
    """OUT, claimed by one run.

    `identity`: the manifest sections that name the run, e.g. `{"stage": "ssb", "config": {...},
    "models": {...}, "prompts": {...}}`. `kind`: the identity section that says what sort of run
    it is ("stage"), used in the default refusal ("OUT holds a ssb run with another config ...").
    """

    def __init__(self, out: str | Path, identity: dict[str, Any], kind: str | None = None):
        self.out = Path(out)
        self.identity = identity
        self.kind = kind

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.json"

    def previous(self) -> dict[str, Any] | None:
        """The manifest a run left in OUT, or None when OUT holds no run yet."""
        if not self.manifest_path.exists():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # ValueError: invalid JSON or not UTF-8
            manifest = None
        if not isinstance(manifest, dict):
            raise UserError(f"{self.manifest_path}: unreadable manifest; use a new --out (or delete it)")
        return manifest

    def changes(self, previous: dict[str, Any]) -> list[str]:
        """The identity sections whose values differ from `previous` (in identity order)."""
        return [section for section, now in self.identity.items() if _jsonable(now) != previous.get(section)]

    def claim(self, refusal: str | None = None) -> dict[str, Any] | None:
        """Check that OUT is new or holds this same run; return the previous manifest (None if
        new). Another run is a UserError: `refusal` when given, else one naming the first
        changed key, e.g. "OUT holds a ssb run with another config ('rollouts': 4 -> 8); ..."."""
        check_out_dir(self.out)
        previous = self.previous()
        changed = self.changes(previous) if previous is not None else []
        if changed:
            if refusal is not None:
                raise UserError(refusal)
            section = changed[0]
            detail = first_difference(previous.get(section), self.identity[section])
            what = previous.get(self.kind, "different") if self.kind else "different"
            raise UserError(f"{self.out} holds a {what} run with another {section}{detail}; "
                            f"use a new --out (or delete it) to start over")
        return previous

    def write_manifest(self, **sections: Any) -> dict[str, Any]:
        """Write OUT/manifest.json atomically with `sections` in the given order (the identity
        sections among them, and `status`)."""
        return write_manifest(self.out, **sections)


def first_difference(before: Any, now: Any, path: str = "") -> str:
    """" ('a.b': old -> new)" for the first differing key of two JSON-like values ("" when
    the values are not mappings, so the section name alone says what changed)."""
    now = _jsonable(now)
    if isinstance(before, dict) and isinstance(now, dict):
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key):
                return first_difference(before.get(key), now.get(key), f"{path}.{key}" if path else key)
    return f" ('{path}': {before!r} -> {now!r})" if path else ""


def _jsonable(value: Any) -> Any:
    """`value` as it reads back from a manifest (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))
