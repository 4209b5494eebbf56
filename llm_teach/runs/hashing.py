"""Stable hashes of content: what names a unit of work, a step, an input set or a seed.

A resumed run must recognise its own earlier work, on any machine and in any process, so these
hashes depend on content alone (JSON with sorted keys, a file's bytes, a text), never on object
identity, hash randomisation or the clock.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence


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


def data_fingerprint(problems: Sequence[Any], source: str | None = None) -> dict[str, Any]:
    """What a run records about the problems it reads: the source (`--data`, when known: a
    loaded `ProblemList` remembers it), their number and a content hash of them all, so that
    another file of the same name, or an edited one, is another run."""
    rows = [p.to_dict() if hasattr(p, "to_dict") else p for p in problems]
    source = source if source is not None else getattr(problems, "source", None)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    return {"source": source, "count": len(rows), "hash": "sha256:" + digest}


def derive_seed(seed: int, key: str) -> int:
    """A 31-bit seed from a base seed and a unit key (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF
