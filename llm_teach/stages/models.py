"""The teacher and the student of a stage: specs, how to reach them, and metered backends.

A stage gets one `Models` instead of ready backends because it often needs more than two
model handles: LLM2LLM evaluates a student it has just trained, ARTE trains the teacher and
then generates with the aligned copy. `Models` makes a backend the first time it is asked
for (so a stage that never uses the student never loads it), reuses one backend when teacher
and student are the same model (SSB's self-distillation loads one copy), and makes backends
for new checkpoints with the same options as the role they replace.

Every backend a stage uses is wrapped in `Metered`, which counts calls and tokens into the
`Usage` of the work unit being run; the totals land in `manifest.json`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from llm_teach.backends import Backend, BackendOptions, Generation, Prompt, SamplingConfig, TokenLogprobs, make_backend


@dataclass
class Models:
    """Teacher and student specs plus the options to reach each (`--teacher-backend` ...).

    Tests and notebooks can hand in ready backends with `Models.of(teacher, student)`.
    """

    teacher: str
    student: str
    teacher_options: BackendOptions = field(default_factory=BackendOptions)
    student_options: BackendOptions = field(default_factory=BackendOptions)
    _made: dict[tuple, Backend] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, teacher: Backend, student: Backend | None = None) -> "Models":
        """Wrap backends that already exist (e.g. a scripted test double); the student
        defaults to the teacher, as in self-distillation."""
        student = student if student is not None else teacher
        models = cls(teacher=teacher.model, student=student.model,
                     teacher_options=BackendOptions(backend=teacher.name),
                     student_options=BackendOptions(backend=student.name))
        models.provide("teacher", teacher)
        if (models.student, models.student_options) != (models.teacher, models.teacher_options):
            models.provide("student", student)
        return models

    def provide(self, role: str, backend: Backend) -> None:
        """Use an existing backend for `role` ("teacher" or "student") instead of making one."""
        spec, options = (self.teacher, self.teacher_options) if role == "teacher" else (self.student, self.student_options)
        self._made[_key(spec, options)] = backend

    def teacher_backend(self) -> Backend:
        return self.backend(self.teacher, self.teacher_options)

    def student_backend(self) -> Backend:
        return self.backend(self.student, self.student_options)

    def backend(self, spec: str, options: BackendOptions) -> Backend:
        """The backend for `spec`, made once per (spec, options)."""
        key = _key(spec, options)
        if key not in self._made:
            self._made[key] = make_backend(spec, options)
        return self._made[key]

    def release(self, spec: str, options: BackendOptions) -> None:
        """Forget a backend (e.g. last round's checkpoint, or a base model before training) and
        free its memory: garbage-collect, and on a GPU empty torch's cache. The caller must hold
        no reference of its own (a `Metered` wrapper included), or the weights stay alive."""
        import gc

        self._made.pop(_key(spec, options), None)
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # a served-only setup without torch
            pass

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the models (secrets are redacted by the writer)."""
        return {role: {"spec": spec, **_option_summary(options)}
                for role, spec, options in (("teacher", self.teacher, self.teacher_options),
                                            ("student", self.student, self.student_options))}


def _key(spec: str, options: BackendOptions) -> tuple:
    return (spec, tuple(sorted(asdict(options).items())))


def _option_summary(options: BackendOptions) -> dict[str, Any]:
    keep = {"backend": options.backend}
    if options.backend == "openai":
        keep["base_url"] = options.base_url
    else:
        keep["dtype"] = options.dtype
    return keep


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
        out = self.inner.generate(prompts, n, sampling)
        gens = [g for row in out for g in row]
        self.meter.usage.add(self.role, generate_calls=1, prompts=len(prompts), completions=len(gens),
                             completion_tokens=sum(len(g.token_ids or []) for g in gens))
        return out

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], top_k: int = 0) -> list[TokenLogprobs]:
        out = self.inner.score(prompts, completions, top_k)
        self.meter.usage.add(self.role, score_calls=1, scored_tokens=sum(len(t.token_ids) for t in out))
        return out

    def __getattr__(self, name: str) -> Any:  # e.g. HFBackend.render / .tokenizer
        return getattr(self.inner, name)


class UsageMeter:
    """Holds the `Usage` that metered backends count into; a stage run swaps in a fresh one
    per work unit so each unit's tokens are recorded with the unit."""

    def __init__(self) -> None:
        self.usage = Usage()

    def wrap(self, make: Callable[[], Backend], role: str) -> Metered:
        return Metered(make, role, self)
