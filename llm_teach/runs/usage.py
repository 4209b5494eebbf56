"""Token usage of a run: calls and tokens per role, counted as backends are called.

Run bookkeeping rather than a model concern: a run directory (`StageRun`) swaps a fresh
`Usage` into its `UsageMeter` for each work unit, so every unit's tokens are recorded with the
unit and the manifest's totals survive a kill and resume. `Metered` is the backend wrapper that
does the counting; it only needs the backend's `generate`/`score`, so this module imports no
backend at run time.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from llm_teach.backends import Backend, Generation, Prompt, SamplingConfig, TokenLogprobs


class Usage:
    """Calls and tokens per role ("teacher", "student", ...), as plain counters."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {}

    def add(self, role: str, **amounts: int) -> None:
        self.counts.setdefault(role, Counter()).update(amounts)

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {role: dict(sorted(c.items())) for role, c in sorted(self.counts.items())}

    @staticmethod
    def total(parts: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
        """Sum several `to_dict()` results (one per work unit)."""
        out = Usage()
        for part in parts:
            for role, amounts in part.items():
                out.add(role, **amounts)
        return out.to_dict()


class Metered:
    """A backend that counts what goes through it into `meter.usage` (the current unit's).

    It holds a factory, not the backend: `Models` caches what the factory makes, so nothing is
    loaded until a unit first calls the model (a resumed run whose units are done loads no
    model), and `Models.release` can free the weights since this wrapper keeps no reference."""

    def __init__(self, make: Callable[[], Backend], role: str, meter: "UsageMeter"):
        if not callable(make):
            raise TypeError("a metered backend is made from a factory, e.g. run.backend(models.teacher_backend, ...)")
        self.make, self.role, self.meter = make, role, meter

    @property
    def inner(self) -> Backend:
        return self.make()

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingConfig) -> list[list[Generation]]:
        backend = self.inner
        self.meter.saw(self.role, backend)
        out = backend.generate(prompts, n, sampling)
        gens = [g for row in out for g in row]
        self.meter.usage.add(self.role, generate_calls=1, prompts=len(prompts), completions=len(gens),
                             completion_tokens=sum(len(g.token_ids or []) for g in gens))
        return out

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], top_k: int = 0,
              **tail: Any) -> list[TokenLogprobs]:
        backend = self.inner
        self.meter.saw(self.role, backend)
        out = backend.score(prompts, completions, top_k, **tail)  # tail: a TailRequest, when asked
        self.meter.usage.add(self.role, score_calls=1, scored_tokens=sum(len(t.token_ids) for t in out))
        return out

    def __getattr__(self, name: str) -> Any:  # e.g. HFBackend.render / .tokenizer
        return getattr(self.inner, name)


class UsageMeter:
    """Holds the `Usage` that metered backends count into; a stage run swaps in a fresh one
    per work unit so each unit's tokens are recorded with the unit. Also holds the request
    counts of served backends (`backend_stats`), which the manifest records per role."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.backend_stats: dict[str, dict[str, Any]] = {}  # role -> a served backend's live `stats`

    def saw(self, role: str, backend: Backend) -> None:
        """Keep a reference to the `stats` dict of a backend that counts its requests (the
        openai backend: requests, retries, and per server of a fleet); the dict, not the
        backend, so the weights of a released model are not kept alive. These are this
        process's counts (unlike `usage`, they do not survive a kill and resume)."""
        stats = getattr(backend, "stats", None)
        if isinstance(stats, dict):
            self.backend_stats[role] = stats

    def wrap(self, make: Callable[[], Backend], role: str) -> Metered:
        return Metered(make, role, self)
