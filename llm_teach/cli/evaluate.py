"""`llm-teach eval`: accuracy of a model on a benchmark."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

import llm_teach.cli.options as opt
from llm_teach.cli.app import app

if TYPE_CHECKING:
    from llm_teach.evaluation import SuiteEntry


# Measured (benchmarks/eval_concurrency.py, RESULTS.md): against a vLLM server of SmolLM2 on a 2-core
# CPU, eval ran 0.5x the in-process hf backend at 1 request in flight, 1.7x at 4 and 2.3-2.7x from 8
# up to 32 (the server saturates at ~8 there); 16 leaves a bigger server room to batch, while a
# one-at-a-time server (`transformers serve`) keeps the queue behind it short of --timeout.
EVAL_CONCURRENCY_HELP = ("openai backend: requests in flight, across chunks. Default 16, measured: against "
                         "a vLLM server on a 2-core CPU, 2.3-2.7x the in-process hf backend at 8-32 "
                         "(0.5x at 1, 1.7x at 4); see benchmarks/RESULTS.md.")


@app.command("eval", epilog="Example: llm-teach eval --model tiny-random --benchmark rg:chain_sum --limit 4 "
                                   "--max-new-tokens 16 --out runs/eval-try")
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
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", help=EVAL_CONCURRENCY_HELP)] = 16,
    timeout: opt.RequestTimeout = 600.0,
    max_retries: opt.MaxRetries = 6,
    dtype: opt.Dtype = "auto",
    batch_size: opt.BatchSize = 16,
    tensor_parallel_size: opt.TensorParallel = 1,
) -> None:
    """Evaluate MODEL on a benchmark (or a --suite of them); writes items.jsonl, summary.json, manifest.json."""
    from llm_teach.config import flag_names
    from llm_teach.evaluation import evaluate_suite, suite_problems
    from llm_teach.models import parse_spec

    entries = _entries(suite, benchmark, data)
    if backend in ("hf", "vllm"):
        parse_spec(model)  # an unknown model fails here, before any data or weights are loaded
    # Every benchmark's problems are read before the model loads: a bad file fails in seconds.
    jobs, skipped = suite_problems(entries, limit=limit, columns=opt.parse_columns(columns), suite=suite)
    options = opt.backend_options(backend, base_url, api_key_env, max_concurrency, dtype, batch_size,
                                  tensor_parallel_size, timeout, max_retries)
    # What is typed on the command line wins over the suite, which wins over the defaults.
    typed = {"samples": samples, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
             "seed": seed, "template": template}
    settings = {k: v for k, v in typed.items() if v is not None}
    evaluate_suite(model, options, jobs, out, settings=settings, spelled=flag_names(settings),
                   suite=suite, skipped=skipped, show=print_summary)


def _entries(suite: str | None, benchmark: str | None, data: str | None) -> list[SuiteEntry]:
    """The benchmarks to run: the --suite file's, or the one --benchmark (or --data) names."""
    from llm_teach.errors import UserError
    from llm_teach.evaluation import SuiteEntry, load_suite

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
    return entries


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
