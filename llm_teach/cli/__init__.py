"""The `llm-teach` command. One module per command group keeps each small; this one wires them
onto the app (`cli/app.py`) and is the single place where user errors become one line on
stderr and exit code 2."""

from __future__ import annotations

import os
import sys

import typer

from llm_teach import interrupts
from llm_teach.cli.app import app

# Importing the command modules registers their commands on `app` (each imports its heavy
# dependencies inside the command, so `llm-teach --help` stays fast).
from llm_teach.cli import doctor, evaluate, generate, merge, models, report, run, serve, train  # noqa: F401


INTERRUPTED = "interrupted; re-run the same command to resume"


def main() -> None:
    """Console-script entry point: run the app, turning UserError into one line + exit 2 and
    Ctrl-C into one line + exit 130 (every command's output directory resumes on a re-run)."""
    from llm_teach.credentials import mask_text
    from llm_teach.errors import UserError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    interrupts.install()
    try:
        # Without standalone mode Typer does not exit: it RETURNS the code of a `typer.Exit`,
        # and turns KeyboardInterrupt into Exit(130) first (typer.core._main); our commands
        # themselves return None.
        code = app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {mask_text(str(exc))}", file=sys.stderr)  # a URL's password never reaches a log
        sys.exit(2)
    except KeyboardInterrupt:  # before or after Typer's own handler (e.g. while importing)
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option value, unknown command
        if hasattr(exc, "show"):
            exc.show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if code == 130:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
