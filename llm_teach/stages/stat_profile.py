"""STAT's Missing-Skill-Profile and the quotas it gives STAT-Sel and STAT-Syn."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any

from llm_teach.data.problems import Problem


def skill_profile(missing: list[dict[str, Any]], skills: list[str]) -> dict[str, int]:
    """Counts per missing skill, most common first (ties in skill-list order)."""
    counts = Counter(s for m in missing for s in m["missing"])
    order = {s: i for i, s in enumerate(skills)}
    return {s: counts[s] for s in sorted(counts, key=lambda s: (-counts[s], order.get(s, len(order))))}


def allocate(profile: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` items over skills in proportion to the profile (largest remainder; exact
    fractions, ties to the more frequent, then earlier, skill). Skills with quota 0 are left out."""
    weight = sum(profile.values())
    if total <= 0 or weight == 0:
        return {}
    exact = {s: Fraction(total * c, weight) for s, c in profile.items()}
    quota = {s: int(e) for s, e in exact.items()}
    order = list(profile)
    by_remainder = sorted(order, key=lambda s: (-(exact[s] - quota[s]), -profile[s], order.index(s)))
    for s in by_remainder[: total - sum(quota.values())]:
        quota[s] += 1
    return {s: q for s, q in quota.items() if q > 0}


def data_size(value: int | None, problems: list[Problem]) -> int:
    """A configured data-set size; None means as many as the input problems."""
    return len(problems) if value is None else value
