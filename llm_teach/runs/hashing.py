"""Stable hashes of content: what names a unit of work, a step, an input set or a seed.

A resumed run must recognise its own earlier work, on any machine and in any process, so these
hashes depend on content alone (JSON with sorted keys, a file's bytes, a text), never on object
identity, hash randomisation or the clock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


def content_hash(value: Any) -> str:
    """A short stable hash of JSON-able content (unit keys, file names)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """"sha256:<hex>" of a file's bytes (a data file, a skills list): a changed file is another input."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def text_hash(text: str) -> str:
    """"sha256:<hex>" of a text (a prompt template's source)."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def ids_digest(ids: Sequence[str]) -> str:
    """A short hash of the input ids for the manifest (which problems, without listing them)."""
    return "sha256:" + content_hash(list(ids))


@dataclass(frozen=True)
class DataFingerprint:
    """The data a run reads, as its run directory records and compares it: the source (`--data`),
    the number of items and a content hash of them all -- so another file of the same name, or
    an edited one, is another run, while the same file copied elsewhere is the same run.

    `prefix(n)` hashes the first n items, when the data is a list of problems: a run re-run over
    MORE problems whose first ones are exactly the earlier run's (a larger --limit) is the same
    run grown, which stages and evaluation extend instead of refusing."""

    source: str | None
    hash: str
    count: int | None = None
    prefix: Callable[[int], str] | None = field(default=None, compare=False, repr=False)

    def record(self) -> dict[str, Any]:
        """The manifest's `data` section."""
        return {"source": self.source, "count": self.count, "hash": self.hash}

    def continues(self, before: Any) -> bool:
        """Is this the data a run recorded as `before` (a `data` section), or that data grown?"""
        if not isinstance(before, dict):
            return False
        if before.get("hash") == self.hash:
            return True
        n = before.get("count")
        return (self.prefix is not None and isinstance(n, int) and self.count is not None and 0 < n <= self.count
                and self.prefix(n) == before.get("hash"))


def data_fingerprint(problems: Sequence[Any], source: str | None = None) -> DataFingerprint:
    """The fingerprint of a list of problems (or records); `source` defaults to the one a loaded
    `ProblemList` remembers."""
    rows = [p.to_dict() if hasattr(p, "to_dict") else p for p in problems]

    def prefix(n: int) -> str:
        return "sha256:" + hashlib.sha256(json.dumps(rows[:n], sort_keys=True, default=str).encode()).hexdigest()

    source = source if source is not None else getattr(problems, "source", None)
    return DataFingerprint(source, prefix(len(rows)), len(rows), prefix)


def derive_seed(seed: int, key: str) -> int:
    """A 31-bit seed from a base seed and a unit key (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF
