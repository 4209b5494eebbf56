"""`llm-teach run PIPELINE.yaml --out DIR`: chain stages, trainers and evaluations.

A pipeline is a list of steps; each writes into `OUT/<step name>/` and later steps refer to
earlier outputs by path, so every hand-over is a file a human can open::

    vars: {student: "smollm2-135m?layers=12", task: "rg:chain_sum"}
    steps:
      - name: before
        eval: ${vars.student}
        data: ${vars.task}?seed=7
        limit: 40
      - name: ssb
        generate: ssb
        teacher: smollm2-135m
        data: ${vars.task}
        config: {rollouts: 4}
      - name: distill
        train: distill
        config: {model: "${vars.student}", data: "${ssb.out}/records.jsonl", max_steps: 40}
      - name: after
        eval: ${distill.model}
        data: ${vars.task}?seed=7
        limit: 40

`--until STEP` stops after STEP; `--keep-going` records a failed step and runs the ones that do
not read it; each step records `seconds` (wall) and `cpu_seconds`.

References: `${vars.NAME}`, `${STEP.out}` (a step's directory) and `${STEP.model}` (the model
a train step produced). Step kinds and their keys:

- eval: MODEL; data, limit, split (test), benchmark, config (EvalConfig fields), backend
  (BackendOptions fields)
- generate: STAGE; teacher, student, data, limit, split (train), config (the stage's config),
  teacher_backend, student_backend, decontaminate (list of files)
- train: METHOD; config (the method's config), launch (run under `accelerate launch` with
  {config_file, num_processes, args}: how ZeRO configs are used)

Every key is checked: an unknown one is a one-line error naming the file, the step and the key.
A step whose definition and inputs (the steps it refers to) are unchanged and which completed
before is skipped (`OUT/pipeline.json` records each step); an interrupted step resumes, since
stages, trainers and evaluation all resume their own output directories. A step whose
definition or inputs changed starts over; its old output is kept as `OUT/<step>.stale-N`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_teach.config import build, check_keys, merge, parse_overrides, read_yaml
from llm_teach.data.jsonl import write_json_atomic
from llm_teach.errors import UserError
from llm_teach.runs.directory import RunDirectory, check_name

TOP_KEYS = {"name", "description", "vars", "steps"}
KINDS = {
    "eval": {"data", "limit", "split", "benchmark", "config", "backend"},
    "generate": {"teacher", "student", "data", "limit", "split", "config", "teacher_backend", "student_backend",
                 "decontaminate"},
    "train": {"config", "launch"},
}
_REF = re.compile(r"\$\{([A-Za-z0-9_\-]+)\.([A-Za-z0-9_\-]+)\}")


@dataclass
class Step:
    name: str
    kind: str  # eval, generate, train
    target: str  # the model to evaluate, the stage, or the training method
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pipeline:
    path: Path
    name: str
    vars: dict[str, Any]
    steps: list[Step]


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> Pipeline:
    """Read and validate a pipeline file (`--set vars.x=y` overrides apply first)."""
    path = Path(path)
    raw = merge(read_yaml(path), parse_overrides(overrides))
    check_keys(raw, TOP_KEYS, f"{path}")
    if not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise UserError(f"{path}: 'steps' must be a non-empty list")
    variables = raw.get("vars") or {}
    if not isinstance(variables, dict):
        raise UserError(f"{path}: 'vars' must be a mapping")
    steps, names = [], set()
    for i, item in enumerate(raw["steps"], start=1):
        where = f"{path}: step {i}"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping with 'name' and one of {', '.join(KINDS)}")
        name = item.get("name")
        try:
            check_name(name, "'name'")
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None
        where = f"{path}: step '{name}'"
        if name in names or name == "vars":
            raise UserError(f"{where}: duplicate step name")
        kinds = [k for k in KINDS if k in item]
        if len(kinds) != 1:
            raise UserError(f"{where}: needs exactly one of {', '.join(KINDS)}")
        kind = kinds[0]
        check_keys(item, {"name", kind} | KINDS[kind], where)
        if not isinstance(item[kind], str):
            raise UserError(f"{where}: '{kind}' must be text (the {'model' if kind == 'eval' else 'stage' if kind == 'generate' else 'method'})")
        options = {k: v for k, v in item.items() if k not in ("name", kind)}
        if kind == "train" and isinstance(options.get("launch"), dict):
            from llm_teach.launch import LAUNCH_KEYS

            check_keys(options["launch"], LAUNCH_KEYS, f"{where}: launch")
        for key in ("config", "backend", "teacher_backend", "student_backend", "launch"):
            if key in options and not isinstance(options[key], dict):
                raise UserError(f"{where}: '{key}' must be a mapping")
        _check_refs(item, names, variables, where)
        steps.append(Step(name, kind, item[kind], options))
        names.add(name)
    return Pipeline(path, str(raw.get("name", path.stem)), variables, steps)


def run_pipeline(pipeline: Pipeline, out: str | Path, echo=print, until: str | None = None,
                 keep_going: bool = False) -> dict[str, dict[str, Any]]:
    """Run every step in order, skipping finished ones; returns `{step: result}` where a result
    has `out`, `seconds` (wall), `cpu_seconds`, and `model` (train) or `summary` (eval).
    `until` stops after that step, so a long experiment can be run a part at a time.

    `keep_going` (make's `-k`): a step that fails with a user-facing error (e.g. a stage whose
    filters kept no record) is recorded as failed with its one-line error, the steps that read
    its output are recorded as skipped, and the rest still run; its result is `{"out",
    "failed": message}`. A grid of independent cells is then not held up by one empty cell, and
    re-running the same command retries exactly the failed and skipped steps."""
    out = Path(out)
    if until is not None and until not in {s.name for s in pipeline.steps}:
        raise UserError(f"{pipeline.path}: --until '{until}' names no step")
    check_pipeline(pipeline, out)
    RunDirectory(out, "pipeline", {}).check_kind()  # e.g. an eval's OUT: refused, left untouched
    state_path = out / "pipeline.json"
    done: dict[str, Any] = read_state(state_path).get("steps", {})
    results: dict[str, dict[str, Any]] = {}
    fingerprints: dict[str, str] = {}
    failed: set[str] = set()
    for step in pipeline.steps:
        if blocked := sorted(_steps_read(step) & failed):
            failed.add(step.name)
            message = f"skipped: it reads {', '.join(blocked)}, which did not complete"
            echo(f"[{step.name}] {message}")
            results[step.name] = {"out": str(out / step.name), "failed": message}
            done[step.name] = {"status": "skipped", "error": message}
            _save_state(state_path, pipeline, done)
            continue
        resolved = _resolve(step, pipeline.vars, results, out)
        # A step's identity includes the identity of every step it reads: paths like
        # ${sft.model} stay the same when what is behind them changes.
        fingerprint = _hash({"kind": step.kind, "target": resolved.target, "options": resolved.options,
                             "inputs": {name: fingerprints[name] for name in sorted(_steps_read(step))}})
        fingerprints[step.name] = fingerprint
        previous = done.get(step.name)
        if previous and previous.get("fingerprint") == fingerprint and previous.get("status") == "complete":
            echo(f"[{step.name}] complete, skipped")
            results[step.name] = previous["result"]
            continue
        step_out = out / step.name
        if previous and previous.get("fingerprint") != fingerprint and step_out.exists():
            # Its output answers another definition: keep it aside rather than resume from it.
            stale = _set_aside(step_out)
            echo(f"[{step.name}] changed (or an input changed); the previous output is now {stale.name}")
        echo(f"[{step.name}] {step.kind} {resolved.target}")
        done[step.name] = {"fingerprint": fingerprint, "status": "running"}
        _save_state(state_path, pipeline, done)
        started, cpu_started = time.time(), _cpu_seconds()
        try:
            result = _RUNNERS[step.kind](resolved, step_out)
        except UserError as error:
            if not keep_going:
                raise
            failed.add(step.name)
            echo(f"[{step.name}] failed: {error}; continuing (--keep-going)")
            results[step.name] = {"out": str(step_out), "failed": str(error)}
            done[step.name] = {"fingerprint": fingerprint, "status": "failed", "error": str(error)}
            _save_state(state_path, pipeline, done)
            continue
        result["seconds"] = round(time.time() - started, 1)
        result["cpu_seconds"] = round(_cpu_seconds() - cpu_started, 1)
        results[step.name] = result
        done[step.name] = {"fingerprint": fingerprint, "status": "complete", "result": result}
        _save_state(state_path, pipeline, done)
        if step.name == until:
            echo(f"[{step.name}] --until reached; re-run without it to continue")
            break
    return results


def _cpu_seconds() -> float:
    """CPU time (user + system, all threads) of this process and of the children it waited for
    (`accelerate launch` ranks): what a step cost the machine, which on a shared machine is a
    fairer budget than wall time (other people's load stretches the wall clock, not this)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _save_state(path: Path, pipeline: Pipeline, done: dict[str, Any]) -> None:
    """`OUT/pipeline.json`: what each step is and whether it completed; its `kind` marks OUT as
    a pipeline's, so no other command writes into it (`runs.directory.MARKERS`)."""
    write_json_atomic(path, {"kind": "pipeline", "pipeline": str(pipeline.path), "name": pipeline.name, "steps": done})


def read_state(path: Path) -> dict[str, Any]:
    """OUT/pipeline.json (the steps a previous run finished), {} for a new OUT; checks that OUT
    can be a directory first, so a bad --out is one line before anything runs."""
    from llm_teach.runs.directory import check_out_dir

    check_out_dir(path.parent)
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: invalid JSON or not UTF-8
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("steps", {}), dict):
        raise UserError(f"{path}: unreadable pipeline state; use a new --out (or delete it)")
    return state


def _steps_read(step: Step) -> set[str]:
    """Names of the earlier steps whose outputs this step refers to."""
    return {scope for scope, _ in _REF.findall(json.dumps([step.target, step.options], default=str))
            if scope != "vars"}


def _set_aside(path: Path) -> Path:
    n = 1
    while (stale := path.with_name(f"{path.name}.stale-{n}")).exists():
        n += 1
    return path.rename(stale)


def check_pipeline(pipeline: Pipeline, out: Path) -> None:
    """Build every step's config, and read every local problems file a step names directly,
    before anything runs, so a typo in step 5 fails in one line now rather than after an hour
    of step 1 (step outputs are stood in for by their paths)."""
    from llm_teach.backends import BackendOptions
    from llm_teach.data import load_problems
    from llm_teach.data.problems import local_file
    from llm_teach.evaluation import EvalConfig
    from llm_teach.stages import load_stage
    from llm_teach.trainers import make_config

    placeholders = {s.name: {"out": str(out / s.name), "model": str(out / s.name / "model")} for s in pipeline.steps}
    for step in pipeline.steps:
        resolved = _resolve(step, pipeline.vars, placeholders, out)
        where = f"{pipeline.path}: step '{step.name}'"
        o = resolved.options
        if "limit" in o and o["limit"] is not None and (
                isinstance(o["limit"], bool) or not isinstance(o["limit"], int) or o["limit"] < 1):
            raise UserError(f"{where}: 'limit' must be a whole number, at least 1 (got {o['limit']!r})")
        data = o.get("data")
        if step.kind != "train" and isinstance(data, str) and not _REF.search(str(step.options.get("data"))) \
                and local_file(data) is not None:
            load_problems(data, o.get("limit"))
        if step.kind == "eval":
            build(EvalConfig, {"benchmark": o.get("benchmark", "gsm8k"), **o.get("config", {})}, f"{where}: config")
            build(BackendOptions, o.get("backend", {}), f"{where}: backend")
        elif step.kind == "generate":
            _, config_cls = load_stage(resolved.target)
            build(config_cls, o.get("config", {}), f"{where}: config")
            for key in ("teacher_backend", "student_backend"):
                build(BackendOptions, o.get(key, {}), f"{where}: {key}")
        else:
            make_config(resolved.target, o.get("config", {}), f"{where}: config")


# -- step runners --------------------------------------------------------------------------------


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


_RUNNERS = {"eval": _run_eval, "generate": _run_generate, "train": _run_train}


# -- references and validation -------------------------------------------------------------------


def _resolve(step: Step, variables: dict[str, Any], results: dict[str, dict[str, Any]], out: Path) -> Step:
    def value(match: re.Match) -> str:
        scope, key = match.groups()
        if scope == "vars":
            return str(variables[key])
        if key == "out":
            return str(out / scope)
        return str(results[scope][key])

    def walk(obj: Any) -> Any:
        if isinstance(obj, str):
            whole = _REF.fullmatch(obj)
            if whole and whole.group(1) == "vars":
                return variables[whole.group(2)]  # keep the variable's type (a number stays a number)
            return _REF.sub(value, obj)
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return Step(step.name, step.kind, walk(step.target), walk(step.options))


def _check_refs(obj: Any, earlier: set[str], variables: dict[str, Any], where: str) -> None:
    if isinstance(obj, dict):
        for v in obj.values():
            _check_refs(v, earlier, variables, where)
    elif isinstance(obj, list):
        for v in obj:
            _check_refs(v, earlier, variables, where)
    elif isinstance(obj, str):
        for scope, key in _REF.findall(obj):
            if scope == "vars":
                if key not in variables:
                    raise UserError(f"{where}: unknown variable '${{vars.{key}}}'")
            elif scope not in earlier:
                raise UserError(f"{where}: '${{{scope}.{key}}}' refers to no earlier step")
            elif key not in ("out", "model"):
                raise UserError(f"{where}: '${{{scope}.{key}}}': a step offers only .out and .model")


def _hash(obj: Any) -> str:
    from llm_teach.runs.hashing import content_hash

    return "sha256:" + content_hash(obj)
