"""`llm-teach run PIPELINE.yaml --out DIR`: run a pipeline of stages, trainers and evaluations."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

import llm_teach.cli.options as opt
from llm_teach.cli.app import app


@app.command("run", epilog="Example: llm-teach run pipelines/demo.yaml --out runs/demo   (writes runs/demo/report.html at the end)")
def run(
    pipeline: Annotated[str, typer.Argument(help="Pipeline YAML (see pipelines/).")],
    out: opt.Out,
    set_: opt.Set = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Stop after this step (run a long pipeline a part at a time).")] = None,
    keep_going: Annotated[bool, typer.Option(
        "--keep-going", help="A failing step is recorded and the steps that do not read its output still run; "
                             "exit code 2 at the end if any failed.")] = False,
    rerun: Annotated[Optional[list[str]], typer.Option(
        "--rerun", help="Run this completed step again, and every step that reads it (old outputs kept as "
                        "OUT/STEP.stale-N; an eval prints its old accuracy beside the new). Repeatable.")] = None,
    only: Annotated[Optional[list[str]], typer.Option(
        "--only", help="Run just this step and the steps it reads (one cell of a grid; e.g. into a new --out to "
                       "check that it reproduces). Repeatable.")] = None,
    prune_checkpoints: Annotated[bool, typer.Option(
        "--prune-checkpoints", help="Delete a train step's checkpoints once it completes (its model is saved; "
                                    "a failed or interrupted step keeps them to resume).")] = False,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, help="Run up to N steps at once that do not read each other's output, each in its own "
                                    "process (logs in OUT/logs/STEP.log). Each step uses torch's threads: set "
                                    "OMP_NUM_THREADS so that N x threads fits the cores.")] = 1,
) -> None:
    """Run PIPELINE step by step into OUT/<step>/; re-running skips finished steps and resumes the rest."""
    from llm_teach.pipeline import load_pipeline, run_pipeline

    from llm_teach.report import write_report

    from llm_teach.errors import UserError

    results = run_pipeline(load_pipeline(pipeline, set_), out, echo=typer.echo, until=until, keep_going=keep_going,
                           rerun=rerun or (), jobs=jobs, only=only or (),
                           prune_checkpoints=prune_checkpoints)
    print_results(results)
    typer.echo(f"report: {write_report(out)}")
    if failed := [name for name, result in results.items() if "failed" in result]:
        raise UserError(f"{len(failed)} step(s) did not complete: {', '.join(failed)} (errors in {out}/pipeline.json)")


def print_results(results: dict) -> None:
    for name, result in results.items():
        if "failed" in result:
            typer.echo(f"{name}: {result['failed']}")
        elif "summary" in result:
            s = result["summary"]
            typer.echo(f"{name}: {s['model']} accuracy {s['accuracy']:.3f} ± {s['accuracy_stderr']:.3f} (n={s['n']})")
        elif "model" in result:
            typer.echo(f"{name}: model {result['model']}")
        else:
            typer.echo(f"{name}: {result['out']}")
