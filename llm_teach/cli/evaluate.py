"""`llm-teach eval`: accuracy of a model on a benchmark."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from llm_teach.cli import app
from llm_teach.cli import options as opt


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Option("--model", help="Model spec (see `llm-teach models list`) or served model name.")],
    out: opt.Out,
    benchmark: Annotated[Optional[str], typer.Option("--benchmark", help="gsm8k, math500 or rg:TASK; sets grading and the default data.")] = None,
    suite: Annotated[Optional[str], typer.Option("--suite", help="YAML list of benchmarks to run together (eval/suites/); results go to OUT/<name>/ and OUT/suite.json.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Where problems come from (default: the benchmark itself); a path is read locally, nothing is fetched.")] = None,
    limit: opt.Limit = None,
    columns: opt.Columns = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Completions per problem (K; default 1); K>1 adds maj@K and pass@K.")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="0 = greedy. Default 0 for one sample, 0.7 for several.")] = None,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Default 512.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    template: Annotated[str, typer.Option("--template", help="Prompt template under prompts/.")] = "eval/boxed.jinja",
    backend: opt.Backend = "hf",
    base_url: opt.BaseUrl = None,
    api_key_env: opt.ApiKeyEnv = None,
    max_concurrency: opt.MaxConcurrency = 8,
    timeout: opt.RequestTimeout = 600.0,
    max_retries: opt.MaxRetries = 6,
    dtype: opt.Dtype = "auto",
    batch_size: opt.BatchSize = 16,
    tensor_parallel_size: opt.TensorParallel = 1,
) -> None:
    """Evaluate MODEL on a benchmark (or a --suite of them); writes items.jsonl, summary.json, manifest.json."""
    from llm_teach.backends import make_backend
    from llm_teach.errors import UserError
    from llm_teach.data import load_problems
    from llm_teach.data.jsonl import write_json_atomic
    from llm_teach.data.problems import local_file
    from llm_teach.evaluation import EvalConfig, SuiteEntry, evaluate, load_suite
    from llm_teach.models import parse_spec

    if suite is not None:
        if benchmark is not None or data is not None:
            raise UserError("--suite names its own benchmarks and data; drop --benchmark/--data")
        entries = load_suite(suite)
    else:
        if benchmark is None:
            if data is None or not (data in ("gsm8k", "math500") or data.startswith("rg:")):
                raise UserError("--benchmark is needed (gsm8k, math500 or rg:TASK) unless --data names one")
            benchmark = data.split("?")[0]
        entries = [SuiteEntry(benchmark=benchmark, data=data)]
    for entry in entries:
        if not (entry.benchmark in ("gsm8k", "math500") or entry.benchmark.startswith("rg:")):
            raise UserError(f"unknown benchmark '{entry.benchmark}' (gsm8k, math500 or rg:TASK)")
    if samples is not None and samples < 1:
        raise UserError("--samples must be at least 1")
    if backend in ("hf", "vllm"):
        parse_spec(model)  # an unknown model fails here, before any data or weights are loaded
    # Every benchmark's problems are read before the model loads: a bad file fails in seconds.
    jobs, skipped = [], []
    for entry in entries:
        path = local_file(entry.data) if entry.data else None
        if suite is not None and path is not None and not path.exists():
            print(f"skipping {entry.dir_name}: {path} is not on this machine", file=sys.stderr)
            skipped.append(entry.dir_name)
            continue
        caps = [n for n in (entry.limit, limit) if n is not None]
        jobs.append((entry, load_problems(entry.data or entry.benchmark, min(caps) if caps else None, split="test",
                                          columns=opt.parse_columns(columns),
                                          data_format=None if entry.benchmark.startswith("rg:") else entry.benchmark)))
    if not jobs:
        raise UserError(f"{suite}: none of its benchmarks' data is on this machine")
    engine = make_backend(model, opt.backend_options(backend, base_url, api_key_env, max_concurrency, dtype,
                                                     batch_size, tensor_parallel_size, timeout, max_retries))
    results = {}
    for entry, problems in jobs:
        # What is typed on the command line wins over the suite, which wins over the defaults.
        k = _first(samples, entry.samples, 1)
        config = EvalConfig(benchmark=entry.benchmark, samples=k, temperature=_first(temperature, entry.temperature,
                                                                                     0.0 if k == 1 else 0.7),
                            top_p=top_p, max_new_tokens=_first(max_new_tokens, entry.max_new_tokens, 512),
                            seed=seed, template=template)
        results[entry.dir_name] = evaluate(engine, problems, config, Path(out) / entry.dir_name if suite else out)
        print_summary(results[entry.dir_name])
    if suite is not None:
        write_json_atomic(Path(out) / "suite.json", {"suite": suite, "model": model, "skipped": skipped,
                                                     "results": results})


def _first(*values):
    return next(v for v in values if v is not None)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['model']} on {summary['benchmark']}")
    for column in ("n", "samples", "accuracy", "± stderr", "maj@k", "pass@k", "truncated"):
        table.add_column(column, justify="right")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    table.add_row(str(summary["n"]), str(summary["samples"]), fmt(summary["accuracy"]),
                  fmt(summary["accuracy_stderr"]), fmt(summary.get("maj_at_k")), fmt(summary.get("pass_at_k")),
                  fmt(summary["truncated_fraction"]))
    Console().print(table)
