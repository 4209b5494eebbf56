"""Short stable hashes of content: what names a unit of work, a step, an input set or a seed.

A resumed run must recognise its own earlier work, on any machine and in any process, so these
hashes depend on content alone (JSON with sorted keys), never on object identity, hash
randomisation or the clock.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence


def content_hash(value: Any) -> str:
    """A short stable hash of JSON-able content (unit keys, file names)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ids_digest(ids: Sequence[str]) -> str:
    """A short hash of the input ids for the manifest (which problems, without listing them)."""
    return "sha256:" + content_hash(list(ids))


def derive_seed(seed: int, key: str) -> int:
    """A 31-bit seed from a base seed and a unit key (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF
