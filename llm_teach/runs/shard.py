"""`--shard K/N`: which work units one of N generation processes (or machines) takes.

Why whole work units, not single problems: a unit's items, key and seed are fixed from the
whole input (`StageRun.units`), so shard K running unit i produces exactly the records the
unsharded run produces for unit i -- sampled rollouts included, not only greedy ones -- and
`llm-teach merge` can put the shards back together unit by unit. Unit i goes to shard
`i mod N + 1`: stable across machines (it depends only on the problems' order, which the data
fingerprint pins, and on `chunk_size`, which is part of the config), and within one unit of an
even 1/N split. A shard is part of the run's identity, so a shard's OUT never resumes as
another shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llm_teach.errors import UserError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`K/N` with 1 <= K <= N, else a one-line UserError naming `--shard`."""
        found = _SPEC.match(str(text))
        if not found or not 1 <= int(found[1]) <= int(found[2]):
            raise UserError(f"--shard '{text}' must be K/N with 1 <= K <= N (e.g. --shard 2/3)")
        return cls(int(found[1]), int(found[2]))

    def takes(self, unit_index: int) -> bool:
        """Does this shard run the step's unit number `unit_index` (0-based)?"""
        return unit_index % self.count == self.index - 1

    def record(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
