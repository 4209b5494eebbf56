"""`llm-teach models list|prepare`."""

from __future__ import annotations

from typing import Annotated

import typer

from llm_teach.cli.app import app

models_app = typer.Typer(help="Model specs: list aliases and cached models, prepare a spec.", no_args_is_help=True,
                        epilog="Example: llm-teach models list")
app.add_typer(models_app, name="models")


@models_app.command("list", epilog="Example: llm-teach models list")
def list_() -> None:
    """Aliases, the spec syntax, and models already converted into the cache."""
    from llm_teach.models import SPEC_HELP, home, list_models

    for row in list_models():
        typer.echo(f"{row['name']:<40} {row['what']}")
    typer.echo(f"\ncache: {home() / 'models'}\n{SPEC_HELP}")


@models_app.command("prepare", epilog="Example: llm-teach models prepare tiny-random")
def prepare(spec: Annotated[str, typer.Argument(help="Model spec, e.g. smollm2-135m or smollm2-135m?layers=20")]) -> None:
    """Convert/download/prune a model once and print its local directory."""
    from llm_teach.models import prepare as prepare_model

    typer.echo(prepare_model(spec))
