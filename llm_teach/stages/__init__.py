"""Teaching stages: each turns problems + a teacher/student pair into training records on disk.

A stage is one module with one public function and a config dataclass beside it (every field
documented), plus its Jinja2 templates under `prompts/<stage>/`:

    def ssb(problems: list[Problem], models: Models, config: SSBConfig, out: str | Path) -> dict

It returns the manifest it wrote. All stages share two small modules:

- `llm_teach.stages.roles`: `Models` (teacher/student specs and backend options; backends
  made on first use).
- `llm_teach.runs.stage_run`: `StageRun` (the output directory: fixed, seeded work units that
  make a killed run resume to exactly the records of an uninterrupted one; counts; token
  usage metered per role; `manifest.json`). Its module docstring is the how-to for writing a
  stage.

`STAGES` below is what `llm-teach generate STAGE` and pipelines look up (imported lazily, so
the CLI starts without loading every stage).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

from llm_teach.errors import UserError


class StageEntry(NamedTuple):
    module: str  # e.g. "llm_teach.stages.ssb"
    function: str  # the public function: (problems, models, config, out) -> manifest
    config: str  # the config dataclass in the same module
    help: str  # one line for `llm-teach generate --help`
    # Sharding (`--shard K/N`, `llm-teach merge`). A stage shards when every step is a per-item
    # `run.map`; then its function takes `shard=` and `outputs` says which work-log records make
    # each output file (how merge rebuilds them) and `stores` names its logit stores. Otherwise
    # `no_shard` says which step needs all items at once (what --shard's refusal prints).
    no_shard: str = ""
    outputs: dict[str, str] = {}
    stores: tuple[str, ...] = ()


STAGES: dict[str, StageEntry] = {
    "llm2llm": StageEntry("llm_teach.stages.llm2llm", "llm2llm", "LLM2LLMConfig",
                          "iterative error mining: train, find the student's errors, teacher writes similar problems",
                          no_shard="each round trains the student on all the data and evaluates it on every problem "
                                   "before the next round starts"),
    "stat": StageEntry("llm_teach.stages.stat", "stat", "STATConfig",
                       "skill-targeted adaptive training: missing-skill profile, select/synthesize problems",
                       no_shard="its skill catalog is clustered once from all free labels and the missing-skill "
                                "profile that sets the selection/synthesis budgets counts every problem"),
    "ssb": StageEntry("llm_teach.stages.ssb", "ssb", "SSBConfig",
                      "semantic soft bootstrapping: self-explanations from right/wrong rollouts + teacher logits",
                      outputs={"records.jsonl": "distill", "rollouts.jsonl": "rollouts"}, stores=("logits",)),
    "arte": StageEntry("llm_teach.stages.arte", "arte", "ARTEConfig",
                       "align the teacher with student preferences (DPO), then generate tailored rationales",
                       no_shard="its probe selection, draft dedupe and the teacher's DPO alignment run once over "
                                "all drafts and pairs"),
}


def load_stage(name: str) -> tuple[Callable[..., dict[str, Any]], type]:
    """The stage function and its config class; an unknown or unavailable stage is a UserError."""
    entry = STAGES.get(name)
    if entry is None:
        raise UserError(f"unknown stage '{name}' (choose from {', '.join(STAGES)})")
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name == entry.module:
            raise UserError(f"stage '{name}' is not available in this version") from None
        raise
    return getattr(module, entry.function), getattr(module, entry.config)


def run_stage(stage: str, models, *, data: str, out: str, limit: int | None = None,
              columns: dict[str, str] | None = None, split: str = "train", config_file: str | None = None,
              overrides: list[str] | None = None, decontaminate: list[str] | None = None,
              no_decontaminate: bool = False, sources: dict[str, str | None] | None = None,
              values: dict[str, Any] | None = None, where: str = "config", shard=None) -> dict[str, Any]:
    """Resolve a stage and its config, check the model specs, load the problems and run it:
    what `llm-teach generate` and pipeline steps both do. Config priority: `values` < YAML
    `config_file` < `decontaminate` files, `no_decontaminate` and `sources` (more problem sources of a
    stage, e.g. ARTE's `--probe`: config keys of the same name) < `--set` `overrides`."""
    import dataclasses

    from llm_teach import config as config_loader
    from llm_teach.data import load_problems
    from llm_teach.models import parse_spec
    from llm_teach.runs.directory import RunDirectory

    entry = STAGES.get(stage)
    if shard is not None and entry is not None and entry.no_shard:
        raise UserError(f"generate {stage} cannot --shard: {STAGES[stage].no_shard} (ssb shards; see README, "
                        f"Scaling out)")
    function, config_cls = load_stage(stage)
    flags: dict[str, Any] = {}
    fields = {f.name for f in dataclasses.fields(config_cls)}
    if decontaminate or no_decontaminate:
        if "decontamination" not in fields:
            raise UserError(f"stage '{stage}' generates no new problems: --decontaminate and --no-decontaminate "
                            f"do not apply")
        flags["decontamination"] = {**({"paths": list(decontaminate)} if decontaminate else {}),
                                    **({"enabled": False} if no_decontaminate else {})}
    for name, source in (sources or {}).items():
        if source is not None:
            if name not in fields:
                raise UserError(f"stage '{stage}' takes no --{name}")
            flags[name] = source
    config = config_loader.load(config_cls, config_file, overrides, defaults=values, flags=flags, where=where,
                                spelled={"decontamination": "--decontaminate"})
    for spec, options in ((models.teacher, models.teacher_options), (models.student, models.student_options)):
        if options.backend in ("hf", "vllm"):
            parse_spec(spec)  # an unknown model fails now, before data or weights are loaded
    RunDirectory(out, f"generate:{stage}", {}).check_kind()  # a bad --out or another command's OUT: before loading data
    problems = load_problems(data, limit, split=split, columns=columns)
    if shard is not None:
        return function(problems, models, config, out, shard=shard)
    return function(problems, models, config, out)


__all__ = ["STAGES", "StageEntry", "load_stage", "run_stage"]
