"""The Typer app of the `llm-teach` command; every command module registers on it.

It lives apart from `llm_teach.cli` (which imports the command modules and holds `main`) so
that a command module importing the app does not import the package that imports it.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="llm-teach",
    help="Teach a small language model with a larger one: generate data, distill, reinforce, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    epilog="Example: llm-teach eval --model tiny-random --benchmark rg:chain_sum --limit 4 --out runs/eval-try",
)
