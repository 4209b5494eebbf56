"""The `llm-teach` command. One module per command group keeps each small; this one wires them
onto the app (`cli/app.py`) and is the single place where user errors become one line on
stderr and exit code 2."""

from __future__ import annotations

import os
import sys

import typer

from llm_teach.cli.app import app

# Importing the command modules registers their commands on `app` (each imports its heavy
# dependencies inside the command, so `llm-teach --help` stays fast).
from llm_teach.cli import evaluate, generate, models, run, serve, train  # noqa: F401


def main() -> None:
    """Console-script entry point: run the app, turning UserError into one line + exit 2."""
    from llm_teach.credentials import mask_text
    from llm_teach.errors import UserError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {mask_text(str(exc))}", file=sys.stderr)  # a URL's password never reaches a log
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option value, unknown command
        if hasattr(exc, "show"):
            exc.show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
