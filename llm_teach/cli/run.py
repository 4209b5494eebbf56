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
    status: Annotated[bool, typer.Option(
        "--status", help="Run nothing: print each step's state in OUT (complete, stale, running, interrupted, "
                         "failed, skipped, pending) and the counts; safe while another run is going.")] = False,
) -> None:
    """Run PIPELINE step by step into OUT/<step>/; re-running skips finished steps and resumes the rest."""
    from llm_teach.pipeline import load_pipeline, run_pipeline

    from llm_teach.report import write_report

    from llm_teach.errors import UserError

    if status:
        print_status(load_pipeline(pipeline, set_), out)
        return
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


def print_status(pipeline, out: str) -> None:
    """`run --status`: one line per step (an eval's accuracy, a step's seconds), then the counts."""
    from collections import Counter
    from pathlib import Path

    from llm_teach.errors import UserError
    from llm_teach.pipeline_status import pipeline_status

    if not (Path(out) / "pipeline.json").is_file():
        raise UserError(f"{out}: no pipeline run here (no pipeline.json)")
    rows = pipeline_status(pipeline, out)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        detail = ""
        if r["result"]:
            result = r["result"]
            if "summary" in result:
                detail = f"accuracy {result['summary']['accuracy']:.3f} (n={result['summary']['n']})  "
            if "seconds" in result:
                detail += f"{result['seconds']:.0f} s"
        elif r["status"] == "stale":
            detail = "recorded under another definition or other inputs: the next run redoes it"
        elif r["status"] in ("failed", "skipped") and r["error"]:
            detail = r["error"]
        typer.echo(f"{r['name']:<{width}}  {r['status']:<11}  {detail}".rstrip())
    counts = Counter(r["status"] for r in rows)
    order = ["complete", "running", "interrupted", "stale", "failed", "skipped", "pending"]
    typer.echo(f"{counts['complete']}/{len(rows)} steps complete; "
               + ", ".join(f"{counts[k]} {k}" for k in order[1:] if counts[k]))
