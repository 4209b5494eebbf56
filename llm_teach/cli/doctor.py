"""`llm-teach doctor`: versions, devices, vLLM/DeepSpeed usability, model cache, free disk."""

from __future__ import annotations

import typer

from llm_teach.cli.app import app


@app.command("doctor", epilog="Example: llm-teach doctor")
def doctor() -> None:
    """Check what this machine can run; ends with a one-line verdict (exit 0)."""
    from llm_teach.doctor import report

    report(typer.echo)
