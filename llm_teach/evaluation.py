"""Accuracy of a model on a benchmark: pass@1 (mean over samples), maj@k and unbiased pass@k.

Work is done in fixed chunks of problems; each finished chunk is appended to
`items.jsonl.part`, so a killed run re-run with the same `--out` redoes at most the chunks it
was working on, and the chunk seeds make the redone samples the same as they would have been.
In-process backends generate one chunk per call. The openai backend gets every chunk left at
once (`generate_in_order`), so `--max-concurrency` requests stay in flight across chunk
boundaries (one chunk at a time capped them at chunk_size x samples and drained them at the end
of every chunk), while chunks are still appended one by one, in order. The resume and
the refusal of another evaluation's `--out` are the shared run-directory mechanism
(`llm_teach.runs`: `RunDirectory`, `work_once`).

`evaluate_suite` is what `llm-teach eval` and a pipeline's eval step both call: one backend
over one or several benchmarks, with the defaults of an evaluation in one place.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from llm_teach.backends import Backend, BackendOptions, SamplingConfig
from llm_teach.config import check_fields
from llm_teach.data.jsonl import RecordLog, write_json_atomic
from llm_teach.data.problems import Problem
from llm_teach.errors import UserError
from llm_teach.grading import grade, majority_vote
from llm_teach.models import weights_stamp
from llm_teach.prompts import render, template_hash
from llm_teach.runs.directory import RunDirectory, check_name
from llm_teach.runs.hashing import data_fingerprint
from llm_teach.runs.worklog import work_once


@dataclass
class EvalConfig:
    """What an evaluation run does. Everything here is recorded; a resume must match it."""

    benchmark: str  # grading rule: gsm8k, math500, rg:TASK
    samples: int = 1  # completions per problem (K)
    temperature: float = 0.0  # 0 = greedy; K > 1 usually wants e.g. 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0
    template: str = "eval/boxed.jinja"  # prompt template under prompts/
    chunk_size: int = 8  # problems per durable append (and per generate call of the in-process backends)

    def __post_init__(self) -> None:
        check_fields(self, samples=">= 1", temperature=">= 0", top_p="(0, 1]", max_new_tokens=">= 1",
                           chunk_size=">= 1")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)


@dataclass
class SuiteEntry:
    """One benchmark of an eval suite (`eval/suites/*.yaml`). Unset fields take the command's
    options; `--limit` caps every entry. A suite names what to run together so numbers stay
    comparable across runs and models."""

    benchmark: str  # gsm8k, math500 or rg:TASK
    data: str | None = None  # problem source; default: the benchmark itself
    limit: int | None = None
    samples: int | None = None
    temperature: float | None = None
    max_new_tokens: int | None = None
    name: str | None = None  # sub-directory of --out; default: the benchmark with ':' -> '-'

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name, "'name'")
        check_fields(self, limit=">= 1", samples=">= 1", temperature=">= 0", max_new_tokens=">= 1")

    @property
    def dir_name(self) -> str:
        return self.name or self.benchmark.replace(":", "-")


def load_suite(path: str | Path) -> list[SuiteEntry]:
    """Read a suite file: `benchmarks:` is a list of SuiteEntry mappings; typos are errors."""
    from llm_teach.config import build, check_keys, read_yaml

    raw = read_yaml(path)
    check_keys(raw, {"benchmarks"}, str(path))
    entries = raw.get("benchmarks")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path}: 'benchmarks' must be a non-empty list of mappings")
    suite = [build(SuiteEntry, entry, f"{path}: benchmarks[{i}]") for i, entry in enumerate(entries)]
    for i, entry in enumerate(suite):
        try:
            check_name(entry.dir_name, "'name'" if entry.name else "benchmark (as a directory name)")
        except ValueError as exc:
            raise UserError(f"{path}: benchmarks[{i}]: {exc}") from None
    names = [e.dir_name for e in suite]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: two benchmarks write to the same directory; give them distinct 'name:'s")
    return suite


def suite_problems(entries: list[SuiteEntry], *, limit: int | None = None, columns: dict[str, str] | None = None,
                   suite: str | None = None) -> tuple[list[tuple[SuiteEntry, list[Problem]]], list[str]]:
    """Every entry's test problems, read before any model loads so that a bad file fails in
    seconds; `limit` caps each entry's own limit. When the entries come from a `suite` file, an
    entry whose local data file is not on this machine is skipped with a note on stderr (and
    none left is an error). Returns (entry, problems) pairs and the skipped entries' names."""
    from llm_teach.data import load_problems
    from llm_teach.data.problems import local_file

    jobs, skipped = [], []
    for entry in entries:
        path = local_file(entry.data) if entry.data else None
        if suite is not None and path is not None and not path.exists():
            print(f"skipping {entry.dir_name}: {path} is not on this machine", file=sys.stderr)
            skipped.append(entry.dir_name)
            continue
        caps = [n for n in (entry.limit, limit) if n is not None]
        jobs.append((entry, load_problems(entry.data or entry.benchmark, min(caps) if caps else None, split="test",
                                          columns=columns,
                                          data_format=None if entry.benchmark.startswith("rg:") else entry.benchmark)))
    if not jobs:
        raise UserError(f"{suite}: none of its benchmarks' data is on this machine")
    return jobs, skipped


def suite_config(entry: SuiteEntry, settings: dict[str, Any], sampled_temperature: float = 0.7,
                 where: str = "eval options", spelled: dict[str, str] | None = None) -> EvalConfig:
    """The EvalConfig of one benchmark. `settings` (what is typed on the command line, or a
    pipeline step's `config`) win over the entry's values, which win over the defaults: one
    sample; greedy for one sample, `sampled_temperature` for several; EvalConfig's for the rest.
    `spelled`: how settings typed as flags are named in errors (`config.flag_names`)."""
    from llm_teach.config import build

    values = {key: getattr(entry, key) for key in ("samples", "temperature", "max_new_tokens")
              if getattr(entry, key) is not None}
    values.update(settings)
    values.setdefault("samples", 1)
    values.setdefault("temperature", 0.0 if values["samples"] == 1 else sampled_temperature)
    return build(EvalConfig, {"benchmark": entry.benchmark, **values}, where, spelled)


def evaluate_suite(model: str, options: BackendOptions, jobs: list[tuple[SuiteEntry, list[Problem]]],
                   out: str | Path, *, settings: dict[str, Any], suite: str | None = None,
                   skipped: list[str] | None = None, sampled_temperature: float = 0.7, where: str = "eval options",
                   spelled: dict[str, str] | None = None,
                   show: Callable[[dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate MODEL (one backend, made once) on each (entry, problems) job and return the
    summaries by entry name. A `suite` (its file) writes each entry into OUT/<entry.dir_name>/
    and OUT/suite.json; a single benchmark writes into OUT. `show` sees each summary as it is
    done. Each entry's config: see `suite_config`. Configs and output directories are checked
    before the model loads."""
    from llm_teach.backends import make_backend

    configs = [suite_config(entry, settings, sampled_temperature, where, spelled) for entry, _ in jobs]
    # Every output directory is checked before the model loads: a bad --out, or another run's
    # OUT, fails in seconds and is left untouched.
    if suite is not None:
        RunDirectory(out, "eval-suite", {}).check_kind()
    for (entry, problems), config in zip(jobs, configs):
        eval_directory(Path(out) / entry.dir_name if suite else out, model, config, problems).claim()
    engine = make_backend(model, options)
    results = {}
    for (entry, problems), config in zip(jobs, configs):
        results[entry.dir_name] = evaluate(engine, problems, config, Path(out) / entry.dir_name if suite else out)
        if show is not None:
            show(results[entry.dir_name])
    if suite is not None:
        write_json_atomic(Path(out) / "suite.json", {"kind": "eval-suite", "suite": suite, "model": model,
                                                     "skipped": skipped or [], "results": results})
    return results


def evaluate(backend: Backend, problems: list[Problem], config: EvalConfig, out_dir: str | Path) -> dict[str, Any]:
    """Generate, grade and write `items.jsonl` + `summary.json` under `out_dir`; return the summary."""
    out = Path(out_dir)
    directory = eval_directory(out, backend.model, config, problems)
    directory.claim()
    sections = _manifest_sections(backend, config, problems)
    directory.write_manifest(**sections, status="running")
    started = time.time()
    chunks_to_items = _ChunkGenerator(backend, config)
    # Chunks are cut from the FULL problem list, never from what is left: a resumed run then
    # batches (and so seeds and samples) every chunk exactly as an uninterrupted run would.
    chunks = [problems[i:i + config.chunk_size] for i in range(0, len(problems), config.chunk_size)]
    items = work_once(RecordLog(out / "items.jsonl"), chunks, key=lambda p: p.id, work=chunks_to_items,
                      description=f"eval {config.benchmark}",
                      stream=chunks_to_items.stream if hasattr(backend, "generate_in_order") else None)
    summary = summarize(items, config, model=backend.model, backend=backend.name)
    write_json_atomic(out / "summary.json", summary)
    directory.write_manifest(**sections, status="complete",
                             timings={"seconds_this_run": round(time.time() - started, 2)},
                             usage={"completion_tokens_this_run": chunks_to_items.tokens},
                             backend_stats=getattr(backend, "stats", None))  # e.g. the openai backend's retries
    return summary


class _ChunkGenerator:
    """Chunks of problems -> graded items through one backend, counting completion tokens."""

    def __init__(self, backend: Backend, config: EvalConfig):
        self.backend, self.config = backend, config
        self.tokens = 0

    def prompts(self, chunk: list[Problem]) -> list:
        return [[{"role": "user", "content": render(self.config.template, question=p.question)}] for p in chunk]

    def items(self, chunk: list[Problem], prompts: list, generations) -> list[dict[str, Any]]:
        self.tokens += sum(len(g.token_ids or []) for gens in generations for g in gens)
        return [_item(p, prompt, gens, self.config.benchmark) for p, prompt, gens in zip(chunk, prompts, generations)]

    def __call__(self, chunk: list[Problem]) -> list[dict[str, Any]]:
        """One chunk, one generate call (the in-process backends)."""
        prompts = self.prompts(chunk)
        return self.items(chunk, prompts, self.backend.generate(prompts, self.config.samples, self.config.sampling()))

    def stream(self, chunks: list[list[Problem]], emit: Callable[[list[dict[str, Any]]], None]) -> None:
        """Every chunk at once (the openai backend's `generate_in_order`); `emit` each in order."""
        prompts = [self.prompts(chunk) for chunk in chunks]
        order = iter(zip(chunks, prompts))

        def done(generations) -> None:
            chunk, chunk_prompts = next(order)
            emit(self.items(chunk, chunk_prompts, generations))

        self.backend.generate_in_order(prompts, self.config.samples, self.config.sampling(), done)


def eval_directory(out: str | Path, model: str, config: EvalConfig, problems: list[Problem]) -> RunDirectory:
    """OUT of one evaluation: its identity is the config, the model (and its weights' stamp:
    a retrained directory is another model) and the problems' content hash."""
    return RunDirectory(out, "eval", {"config": asdict(config), "model": model, "weights": weights_stamp(model)},
                        data=data_fingerprint(problems))


def _manifest_sections(backend: Backend, config: EvalConfig, problems: list[Problem]) -> dict[str, Any]:
    """What an evaluation's manifest records before its status, in order."""
    return {"model": backend.model, "weights": weights_stamp(backend.model), "backend": backend.name,
            "config": asdict(config), "prompts": {config.template: template_hash(config.template)},
            "counts": {"problems": len(problems)}}


def _item(problem: Problem, prompt, generations, benchmark: str) -> dict[str, Any]:
    grades = [grade(g.completion, problem.answer, benchmark, problem.meta) for g in generations]
    return {
        "id": problem.id,
        "gold": problem.answer,
        "prompt": prompt,
        "completions": [g.completion for g in generations],
        "answers": [gr.extracted for gr in grades],
        "correct": [gr.correct for gr in grades],
        "methods": [gr.method for gr in grades],
        "finish_reasons": [g.finish_reason for g in generations],
    }


def summarize(items: list[dict[str, Any]], config: EvalConfig, model: str, backend: str) -> dict[str, Any]:
    k = config.samples
    per_item = [sum(it["correct"]) / len(it["correct"]) for it in items]
    n = len(items)
    accuracy = sum(per_item) / n if n else 0.0
    summary: dict[str, Any] = {
        "benchmark": config.benchmark,
        "model": model,
        "backend": backend,
        "n": n,
        "samples": k,
        "accuracy": accuracy,
        # Standard error of the mean over problems: the honest size of a small-n difference.
        "accuracy_stderr": _stderr(per_item),
        "truncated_fraction": _mean([r == "length" for it in items for r in it["finish_reasons"]]),
        "no_answer_fraction": _mean([a is None for it in items for a in it["answers"]]),
        "temperature": config.temperature,
        "max_new_tokens": config.max_new_tokens,
    }
    if k > 1:
        summary["maj_at_k"] = _mean([majority_correct(it, config.benchmark) for it in items])
        summary["pass_at_k"] = _mean([pass_at_k(len(it["correct"]), sum(it["correct"]), k) for it in items])
        summary["pass_at"] = {str(j): _mean([pass_at_k(len(it["correct"]), sum(it["correct"]), j) for it in items])
                              for j in _powers_of_two(k)}
    return summary


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(item: dict[str, Any], benchmark: str) -> bool:
    """Is the most common extracted answer correct? Equivalent answers (1,000 and 1000.0)
    vote together; ties go to the answer seen first; no answer never wins."""
    index, _ = majority_vote(item["answers"], benchmark)
    return index is not None and bool(item["correct"][index])




def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _stderr(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _powers_of_two(k: int) -> list[int]:
    out, j = [], 1
    while j < k:
        out.append(j)
        j *= 2
    return out + [k]
