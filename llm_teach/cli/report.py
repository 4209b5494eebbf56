"""`llm-teach report RUN_DIR [--html OUT.html]` and `llm-teach report --compare RUN_A RUN_B ...`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llm_teach.cli.app import app


@app.command("report", epilog="Example: llm-teach report runs/eval-rg   (writes runs/eval-rg/report.html and report.md)")
def report(
    run_dirs: Annotated[list[str], typer.Argument(help="A run directory (eval, train, generate or run --out); with --compare, two or more.")],
    html: Annotated[Optional[str], typer.Option("--html", help="Where to write the HTML page (default RUN_DIR/report.html; the .md goes beside it).")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Put the runs side by side: final metrics table and overlaid curves.")] = False,
) -> None:
    """Write a self-contained HTML report (plots embedded, no network) and a Markdown summary of a run; prints the HTML path."""
    from llm_teach.errors import UserError
    from llm_teach.report import write_comparison, write_report

    if compare:
        if len(run_dirs) < 2:
            raise UserError("--compare needs two or more run directories")
        path = write_comparison(run_dirs, html or "compare.html")
    else:
        if len(run_dirs) != 1:
            raise UserError(f"report takes one run directory (got {len(run_dirs)}); use --compare for several")
        path = write_report(run_dirs[0], html)
    typer.echo(str(path))
