"""The teacher and the student of a stage: specs and how to reach them.

A stage gets one `Models` instead of ready backends because it often needs more than two
model handles: LLM2LLM evaluates a student it has just trained, ARTE trains the teacher and
then generates with the aligned copy. `Models` makes a backend the first time it is asked
for (so a stage that never uses the student never loads it), reuses one backend when teacher
and student are the same model (SSB's self-distillation loads one copy), and makes backends
for new checkpoints with the same options as the role they replace.

Every backend a stage uses is wrapped in `llm_teach.runs.usage.Metered` (by `StageRun.backend`),
which counts calls and tokens into the `Usage` of the work unit being run; the totals land in
`manifest.json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from llm_teach.backends import Backend, BackendOptions, make_backend


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
