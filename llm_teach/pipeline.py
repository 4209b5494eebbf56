"""`llm-teach run PIPELINE.yaml --out DIR`: chain stages, trainers and evaluations.

A pipeline is a list of steps; each writes into `OUT/<step name>/` and later steps refer to
earlier outputs by path, so every hand-over is a file a human can open. `pipelines/demo.yaml`
is a complete one (evaluate a student, SSB from a teacher, distill, evaluate again), and every
file under `pipelines/` is validated by the tests, so the examples cannot drift from this format.

`--until STEP` stops after STEP; `--keep-going` records a failed step and runs the ones that do
not read it; `--only STEP` runs just STEP and what it reads; `--jobs N` runs up to N steps that
do not read each other at once; `--rerun STEP` redoes a completed step and what reads it;
`--prune-checkpoints` deletes a completed training's checkpoints; `--status` runs nothing and
says where each step stands (`pipeline_status.py`); each step records `seconds` (wall) and
`cpu_seconds`.

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
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_teach.config import build, check_keys, merge, parse_overrides, read_yaml
from llm_teach.errors import UserError
from llm_teach.pipeline_steps import Step, remove_checkpoints, run_step, run_step_quietly
from llm_teach.runs.directory import RunDirectory, check_name
from llm_teach.runs.pipeline_state import exclusive, read_state, save_state, set_aside
from llm_teach.runs.step_process import start_step, wait_any

TOP_KEYS = {"name", "description", "vars", "steps"}
KINDS = {
    "eval": {"data", "limit", "split", "benchmark", "config", "backend"},
    "generate": {"teacher", "student", "data", "limit", "split", "config", "teacher_backend", "student_backend",
                 "decontaminate"},
    "train": {"config", "launch"},
}
_REF = re.compile(r"\$\{([A-Za-z0-9_\-]+)\.([A-Za-z0-9_\-]+)\}")


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
                 keep_going: bool = False, rerun: tuple[str, ...] | list[str] = (),
                 jobs: int = 1, only: tuple[str, ...] | list[str] = (),
                 prune_checkpoints: bool = False) -> dict[str, dict[str, Any]]:
    """Run every step in order, skipping finished ones; returns `{step: result}` where a result
    has `out`, `seconds` (wall), `cpu_seconds`, and `model` (train) or `summary` (eval).
    `until` stops after that step, so a long experiment can be run a part at a time.

    `keep_going` (make's `-k`): a step failing with a UserError (e.g. a stage that kept no
    record) is recorded with its error, steps reading it are skipped, the rest run (result
    `{"out", "failed": message}`): one empty cell does not hold up a grid; a re-run retries them.
    `rerun`: redo these completed steps and all that read them (old outputs kept as
    `OUT/<step>.stale-N`; an eval echoes its old accuracy): a cell's reproducibility check.
    `jobs` (make's `-j`): up to this many steps at once, each in its own process with its log in
    `OUT/logs/<step>.log`; a step starts once the steps it reads have completed, in file order.
    Without `keep_going` a failure starts nothing new, lets the running steps finish, then raises.
    `only` (make's targets): just these steps and the steps they read, directly or not: one cell
    of a grid, e.g. into a fresh OUT to check that it reproduces.
    `prune_checkpoints`: delete a train step's `checkpoints/` once it has completed (they exist
    to resume it; its model is saved): a grid of 30 trainings of a 135M model otherwise keeps
    ~60 GB of optimizer states. A failed or interrupted step keeps them, to resume.
    """
    out = Path(out)
    names = [s.name for s in pipeline.steps]
    if until is not None and until not in names:
        raise UserError(f"{pipeline.path}: --until '{until}' names no step")
    if unknown := sorted(set(rerun) - set(names)):
        raise UserError(f"{pipeline.path}: --rerun '{unknown[0]}' names no step")
    if unknown := sorted(set(only) - set(names)):
        raise UserError(f"{pipeline.path}: --only '{unknown[0]}' names no step")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")
    check_pipeline(pipeline, out)
    RunDirectory(out, "pipeline", {}).check_kind()  # e.g. an eval's OUT: refused, left untouched
    steps = pipeline.steps[:names.index(until) + 1] if until else pipeline.steps
    if only:
        needed = _with_inputs(pipeline.steps, set(only))
        steps = [s for s in steps if s.name in needed]
    read_state(out / "pipeline.json")  # an unreadable state is refused before OUT is touched
    with exclusive(out):
        return _Schedule(pipeline, out, echo, keep_going, set(rerun), jobs, prune_checkpoints).run(steps, until)


def _with_inputs(steps: list[Step], names: set[str]) -> set[str]:
    """`names` and every step they read, directly or through other steps."""
    needed = set(names)
    for step in reversed(steps):  # a step reads only earlier steps: one backward pass closes the set
        if step.name in needed:
            needed |= _steps_read(step)
    return needed


class _Schedule:
    """What has run, what failed, and what each step's fingerprint is, for one `run_pipeline`:
    state that every step's decision reads, hence a class."""

    def __init__(self, pipeline: Pipeline, out: Path, echo, keep_going: bool, forced: set[str], jobs: int,
                 prune_checkpoints: bool):
        self.pipeline, self.out, self.echo, self.keep_going, self.forced, self.jobs = \
            pipeline, out, echo, keep_going, forced, jobs
        self.rerun = set(forced)  # the steps named by --rerun (`forced` grows by what reads them)
        self.prune_checkpoints = prune_checkpoints
        self.state_path = out / "pipeline.json"
        self.done: dict[str, Any] = read_state(self.state_path).get("steps", {})
        self.results: dict[str, dict[str, Any]] = {}
        self.fingerprints: dict[str, str] = {}
        self.failed: set[str] = set()

    def run(self, steps: list[Step], until: str | None) -> dict[str, dict[str, Any]]:
        pending, running, stop = list(steps), [], None
        while pending or running:
            for step in list(pending):
                if stop is not None:
                    break
                reads = _steps_read(step)
                if not reads & self.failed and not reads <= self.results.keys():
                    continue  # an input is still running
                if len(running) >= self.jobs and not (reads & self.failed) and not self._finished(step):
                    continue  # no free slot
                pending.remove(step)
                launched = self._decide(step, reads)
                if launched is None:
                    continue  # skipped: completed before, or an input failed
                resolved, fingerprint, previous = launched
                if self.jobs == 1:  # in this process, as it always was: tracebacks and logs as they come
                    self._record(step, fingerprint, previous,
                                 run_step(step, resolved, self.out / step.name, self.keep_going, self.echo))
                else:
                    log = self.out / "logs" / f"{step.name}.log"
                    self.echo(f"[{step.name}] started (log: {log})")
                    process = start_step(step.name, run_step_quietly, (resolved, self.out / step.name), log)
                    running.append((process, fingerprint, previous))
            if running:
                for ended in wait_any([p for p, _, _ in running]):
                    entry = next(r for r in running if r[0] is ended)
                    running.remove(entry)
                    step = next(s for s in steps if s.name == ended.name)
                    result = ended.outcome() or {
                        "out": str(self.out / step.name),
                        "failed": f"its process ended (exit code {ended.process.exitcode}) without a result; "
                                  f"see {ended.log}"}
                    self._record(step, entry[1], entry[2], result)
                    if "failed" in result:
                        self.echo(f"[{step.name}] failed: {result['failed']}"
                                  + ("; continuing (--keep-going)" if self.keep_going else ""))
                        if not self.keep_going and stop is None:
                            stop = f"step '{step.name}': {result['failed']}"
                    else:
                        self.echo(f"[{step.name}] complete ({result['seconds']} s, log: {ended.log})")
            elif stop is None and pending:  # nothing running, nothing startable: cannot happen with refs checked
                raise AssertionError(f"steps never became ready: {[s.name for s in pending]}")
            if stop is not None and not running:
                raise UserError(stop)
        if until is not None and until in self.results:
            self.echo(f"[{until}] --until reached; re-run without it to continue")
        return self.results

    def _finished(self, step: Step) -> bool:
        """Completed before with the same definition and inputs (so it takes no slot)."""
        reads = _steps_read(step)
        if step.name in self.forced or reads & self.forced:
            return False
        previous = self.done.get(step.name) or {}
        return previous.get("status") == "complete" and previous.get("fingerprint") == self._fingerprint(step, reads)[1]

    def _fingerprint(self, step: Step, reads: set[str], redo: int | None = None) -> tuple[Step, str]:
        resolved = _resolve(step, self.pipeline.vars, self.results, self.out)
        # A step's identity includes the identity of every step it reads: paths like
        # ${sft.model} stay the same when what is behind them changes.
        identity = {"kind": step.kind, "target": resolved.target, "options": resolved.options,
                    "inputs": {name: self.fingerprints[name] for name in sorted(reads)}}
        # How often --rerun redid it: a redone step is a new identity, so a step that read its old
        # output is redone too, even by a later run when this one stopped before reaching it.
        redo = (self.done.get(step.name) or {}).get("redo", 0) if redo is None else redo
        if redo:
            identity["redo"] = redo
        return resolved, _hash(identity)

    def _decide(self, step: Step, reads: set[str]) -> tuple[Step, str, dict[str, Any]] | None:
        """Skip the step (its input failed, or it completed before) or prepare it to run:
        returns (resolved step, fingerprint, previous record) or None when skipped."""
        if blocked := sorted(reads & self.failed):
            self.failed.add(step.name)
            message = f"skipped: it reads {', '.join(blocked)}, which did not complete"
            self.echo(f"[{step.name}] {message}")
            self.results[step.name] = {"out": str(self.out / step.name), "failed": message}
            # The old fingerprint stays, so a partial output of this step resumes once its input
            # completes (without it the output would be set aside as another definition's).
            self.done[step.name] = {**self._identity(step.name), "status": "skipped", "error": message}
            self._save()
            return None
        previous = self.done.get(step.name) or {}
        redo = previous.get("redo", 0) + (step.name in self.rerun)
        resolved, fingerprint = self._fingerprint(step, reads, redo)
        self.fingerprints[step.name] = fingerprint
        if reads & self.forced:
            self.forced.add(step.name)
        unchanged = previous.get("fingerprint") == fingerprint
        if unchanged and previous.get("status") == "complete" and step.name not in self.forced:
            self.echo(f"[{step.name}] complete, skipped")
            self.results[step.name] = previous["result"]
            return None
        step_out = self.out / step.name
        if step_out.exists() and (previous and not unchanged or step.name in self.forced):
            # Its output answers another definition (or is to be redone): kept aside, not resumed.
            stale = set_aside(step_out)
            why = "--rerun" if step.name in self.forced else "changed (or an input changed)"
            self.echo(f"[{step.name}] {why}; the previous output is now {stale.name}")
        self.echo(f"[{step.name}] {step.kind} {resolved.target}")
        self.done[step.name] = {"fingerprint": fingerprint, "status": "running", "run_pid": os.getpid(),
                                **({"redo": redo} if redo else {})}
        self._save()
        return resolved, fingerprint, previous

    def _identity(self, name: str) -> dict[str, Any]:
        """The fingerprint (and --rerun count) a step's record keeps whatever its status."""
        record = self.done.get(name) or {}
        return {k: record[k] for k in ("fingerprint", "redo") if k in record}

    def _record(self, step: Step, fingerprint: str, previous: dict[str, Any], result: dict[str, Any]) -> None:
        self.results[step.name] = result
        identity = {**self._identity(step.name), "fingerprint": fingerprint}
        if "failed" in result:
            self.failed.add(step.name)
            self.done[step.name] = {**identity, "status": "failed", "error": result["failed"]}
        else:
            self.done[step.name] = {**identity, "status": "complete", "result": result}
            if step.name in self.forced and "summary" in (previous.get("result") or {}):
                was, now = previous["result"]["summary"]["accuracy"], result["summary"]["accuracy"]
                self.echo(f"[{step.name}] accuracy {now:.4f} (before --rerun: {was:.4f})")
            if self.prune_checkpoints and step.kind == "train":
                remove_checkpoints(step, self.out / step.name, self.echo)
        self._save()

    def _save(self) -> None:
        save_state(self.state_path, self.pipeline.path, self.pipeline.name, self.done)


def _steps_read(step: Step) -> set[str]:
    """Names of the earlier steps whose outputs this step refers to."""
    return {scope for scope, _ in _REF.findall(json.dumps([step.target, step.options], default=str))
            if scope != "vars"}


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
