"""OUT as the home of one run: what run it is, refusal of another run's directory, the manifest.

Every command that writes an output directory resumes into it when re-run with the same
`--out`. That is only safe when the directory holds the SAME run, so a run states

- its `kind` ("eval", "generate:ssb", "train:sft", "pipeline", ...), recorded first in its
  manifest: a directory of another kind is refused, naming both kinds, before anything is
  read or written (an eval resumed into a training run's OUT would mix two manifests);
- its identity: the manifest sections that say which run it is (config, models, prompts,
  weights) and, for a command that reads problems, a content hash of those problems (the
  `data` fingerprint; the data source is recorded beside it). `claim` compares them with the
  manifest already in OUT and refuses a difference, naming the changed keys.

The refusal protects work, not a manifest: when OUT holds no work yet (no non-empty file
but the manifest, e.g. a start that failed on a bad value), a run with another identity simply
starts over, so a failed start never blocks its corrected re-run.

The manifest carries a `status` ("running", then "complete") so a caller can tell a finished
run from an interrupted one. `write_manifest` adds command, versions, host and the time, and
masks secrets. Also here: `check_name`, the one check for a name that becomes a path in OUT.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llm_teach.credentials import mask_text
from llm_teach.errors import UserError
from llm_teach.runs.hashing import DataFingerprint
from llm_teach.runs.manifest import write_manifest

# Files that mark OUT as some command's, besides manifest.json (which names its own kind).
MARKERS = {"pipeline.json": "pipeline", "suite.json": "eval-suite"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


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
    RunDirectory(out, "", {}).previous()  # the kind does not matter for reading


class RunDirectory:
    """OUT, claimed by one run of `kind`.

    `identity`: the manifest sections that name the run, e.g. `{"config": {...}, "models":
    {...}}`. `data`: the fingerprint of the data the run reads (`DataFingerprint`: source,
    count, hash), or None; it is recorded as the `data` section and its content is part of the
    identity (where the data lives is not: the same file copied elsewhere is the same run; more
    problems that begin with the earlier ones are the same run grown).
    """

    def __init__(self, out: str | Path, kind: str, identity: dict[str, Any], data: DataFingerprint | None = None):
        self.out = Path(out)
        self.kind = kind
        self.data = data
        self.identity = identity

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
        """The identity sections whose values differ from `previous` (in identity order), then
        "data" when the data is neither the recorded data nor that data grown."""
        changed = [section for section, now in self.identity.items() if _jsonable(now) != previous.get(section)]
        if self.data is not None and not self.data.continues(previous.get("data")):
            changed.append("data")
        return changed

    def has_work(self) -> bool:
        """Does OUT hold anything a run produced (a non-empty file besides the manifest)?"""
        if not self.out.is_dir():
            return False
        return any(p.is_file() and p.stat().st_size > 0 and p != self.manifest_path for p in self.out.rglob("*"))

    def claim(self) -> dict[str, Any] | None:
        """Check that OUT is new, holds no work, or holds this same run; return the previous
        manifest of this same run (None to start afresh). Another kind, or this kind with
        another identity over existing work, is a one-line UserError; nothing is touched."""
        previous = self.check_kind()
        if previous is None:
            return None
        changed = self.changes(previous)
        if not changed:
            return previous
        if not self.has_work():
            return None  # a start that produced nothing: start over with the new identity
        details = [d for section in changed for d in self._describe(section, previous)]
        shown = "; ".join(details[:4]) + (f"; and {len(details) - 4} more" if len(details) > 4 else "")
        raise UserError(mask_text(f"{self.out} holds {_a(self.kind)} run with other {', '.join(changed)}: "
                                  f"{shown}; use a new --out (or delete it) to start over"))

    def check_kind(self) -> dict[str, Any] | None:
        """Refuse OUT when it cannot hold a run (`check_out_dir`) or holds another kind of run;
        return its manifest (None if none)."""
        check_out_dir(self.out)
        previous = self.previous()
        found = manifest_kind(previous) if previous is not None else None
        if previous is None:
            found = next((kind for name, kind in MARKERS.items() if (self.out / name).is_file()), None)
        if found is not None and found != self.kind:
            raise UserError(f"{self.out} holds {_a(found)} run, not {_a(self.kind)} run; use a new --out "
                            f"(it was left untouched)")
        return previous

    def write_manifest(self, **sections: Any) -> dict[str, Any]:
        """Write OUT/manifest.json atomically: `kind`, the data fingerprint, then `sections`
        in the given order (`status` and the rest; the identity is always recorded, where the
        caller places it or else after the data)."""
        data = {"data": self.data.record()} if self.data is not None else {}
        return write_manifest(self.out, kind=self.kind, **data, **{**self.identity, **sections})

    def _describe(self, section: str, previous: dict[str, Any]) -> list[str]:
        if section == "data":
            return [f"data {_data_text(previous.get('data'))} -> {_data_text(self.data.record())}"]
        return differences(previous.get(section), self.identity[section], section)


def manifest_kind(manifest: dict[str, Any]) -> str:
    """A manifest's kind; manifests written before kinds existed are recognised by their sections."""
    if isinstance(manifest.get("kind"), str):
        return manifest["kind"]
    if "stage" in manifest:
        return f"generate:{manifest['stage']}"
    if "method" in manifest:
        return f"train:{manifest['method']}"
    return "eval" if "weights" in manifest else "unknown"


def check_name(name: Any, what: str) -> str:
    """`name` when it is safe as one path component inside OUT (a word: letters, digits, '-' and
    '_'), else ValueError: a name like '../../x' or '/tmp/x' would write outside OUT. The one
    check for every name that becomes a directory (suite entries, pipeline steps); a word is
    also what a pipeline's `${step.out}` reference can name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{what} {name!r} must be a word (letters, digits, - and _): it becomes a directory "
                         f"inside --out")
    return name


def differences(before: Any, now: Any, path: str) -> list[str]:
    """"a.b: old -> new" for every differing leaf key of two JSON-like values, in key order."""
    now = _jsonable(now)
    if isinstance(before, dict) and isinstance(now, dict):
        return [d for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)
                for d in differences(before.get(key), now.get(key), f"{path}.{key}")]
    return [f"{path}: {_short(before)} -> {_short(now)}"]


def _a(kind: str) -> str:
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _data_text(data: Any) -> str:
    if not isinstance(data, dict):
        return "(not recorded)"
    count = f"{data['count']} from " if data.get("count") is not None else ""
    return f"{count}{data.get('source') or 'a list'} ({str(data.get('hash'))[:15]})"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> Any:
    """`value` as it reads back from a manifest (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))
