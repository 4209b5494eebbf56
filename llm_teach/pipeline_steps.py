"""One pipeline step, what it is and how it runs: the runner of each kind (eval, generate,
train), its wall and CPU time, and the variant that runs in a process of its own
(`llm-teach run --jobs`). Kept apart from `llm_teach.pipeline`, which decides what runs when."""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from llm_teach.config import build
from llm_teach.errors import UserError

@dataclass
class Step:
    name: str
    kind: str  # eval, generate, train
    target: str  # the model to evaluate, the stage, or the training method
    options: dict[str, Any] = field(default_factory=dict)


def run_step_quietly(resolved: Step, step_out: Path) -> dict[str, Any]:
    """A step in its own process (`--jobs`): a UserError comes back as `{"failed": message}`,
    so the parent decides what a failure means; its echo goes to the step's log."""
    return run_step(resolved, resolved, step_out, True, print)


def run_step(step: Step, resolved: Step, step_out: Path, keep_going: bool, echo) -> dict[str, Any]:
    """One step's result with its wall and CPU seconds; with `keep_going` a UserError becomes
    `{"out", "failed": message}` instead of ending the run."""
    started, cpu_started = time.time(), _cpu_seconds()
    try:
        result = RUNNERS[step.kind](resolved, step_out)
    except UserError as error:
        if not keep_going:
            raise
        echo(f"[{step.name}] failed: {error}; continuing (--keep-going)")
        return {"out": str(step_out), "failed": str(error)}
    result["seconds"] = round(time.time() - started, 1)
    result["cpu_seconds"] = round(_cpu_seconds() - cpu_started, 1)
    return result


def _cpu_seconds() -> float:
    """CPU time (user + system, all threads) of this process and of the children it waited for
    (`accelerate launch` ranks): what a step cost the machine, which on a shared machine is a
    fairer budget than wall time (other people's load stretches the wall clock, not this)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_eval(step: Step, out: Path) -> dict[str, Any]:
    from llm_teach.backends import BackendOptions
    from llm_teach.data import load_problems
    from llm_teach.data.problems import grading_benchmark
    from llm_teach.evaluation import SuiteEntry, evaluate_suite

    o = step.options
    where = f"step '{step.name}'"
    if "data" not in o:
        raise UserError(f"{where}: eval needs 'data'")
    problems = load_problems(str(o["data"]), o.get("limit"), split=o.get("split", "test"))
    # A step may leave the benchmark (the grading rule) to the data it reads.
    entry = SuiteEntry(benchmark=o.get("benchmark") or grading_benchmark(problems[0].source), data=str(o["data"]))
    options = build(BackendOptions, o.get("backend", {}), f"{where}: backend")
    # A step's config is EvalConfig's fields as written: several samples stay greedy unless it
    # sets a temperature (the command line's default of 0.7 for several samples does not apply).
    results = evaluate_suite(step.target, options, [(entry, problems)], out, settings=dict(o.get("config", {})),
                             sampled_temperature=0.0, where=f"{where}: config")
    return {"out": str(out), "summary": results[entry.dir_name]}


def _run_generate(step: Step, out: Path) -> dict[str, Any]:
    from llm_teach.backends import BackendOptions
    from llm_teach.stages import run_stage
    from llm_teach.stages.roles import Models

    o = step.options
    where = f"step '{step.name}'"
    for key in ("teacher", "data"):
        if key not in o:
            raise UserError(f"{where}: generate needs '{key}'")
    models = Models(teacher=str(o["teacher"]), student=str(o.get("student", o["teacher"])),
                    teacher_options=build(BackendOptions, o.get("teacher_backend", {}), f"{where}: teacher_backend"),
                    student_options=build(BackendOptions, o.get("student_backend", {}), f"{where}: student_backend"))
    manifest = run_stage(step.target, models, data=str(o["data"]), out=str(out), limit=o.get("limit"),
                         split=o.get("split", "train"), decontaminate=o.get("decontaminate"),
                         values=dict(o.get("config", {})), where=f"{where}: config")
    return {"out": str(out), "counts": manifest.get("counts", {})}


def _run_train(step: Step, out: Path) -> dict[str, Any]:
    from llm_teach.launch import train_model

    model = train_model(step.target, dict(step.options.get("config", {})), out, step.options.get("launch"))
    return {"out": str(out), "model": str(model)}


RUNNERS = {"eval": _run_eval, "generate": _run_generate, "train": _run_train}


def remove_checkpoints(step: Step, step_out: Path, echo) -> None:
    """Remove a completed train step's checkpoints (`--prune-checkpoints`)."""
    import shutil

    checkpoints = step_out / "checkpoints"
    if checkpoints.is_dir():
        size = sum(f.stat().st_size for f in checkpoints.rglob("*") if f.is_file())
        shutil.rmtree(checkpoints)
        echo(f"[{step.name}] checkpoints removed ({size / 2**30:.1f} GiB; --prune-checkpoints)")
