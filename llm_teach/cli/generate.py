"""`llm-teach generate STAGE`: run a teaching stage (one subcommand per entry of `STAGES`).

Every stage takes the same options: the teacher and student, where problems come from, the
output directory, and stage settings from `--config FILE` and `--set key=value` (the stage's
config dataclass; unknown keys are errors; `--show-options` lists them with defaults and help). Teacher and student each have the backend options
of `llm-teach eval` with a `--teacher-`/`--student-` prefix.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from llm_teach.cli.app import app
from llm_teach.cli import options as opt
from llm_teach.stages import STAGES, run_stage

generate_app = typer.Typer(help="Generate training data with a teaching stage (resumable: re-run the same --out).",
                           no_args_is_help=True,
                           epilog="Example: llm-teach generate ssb --teacher tiny-random --data rg:chain_sum --limit 4 "
                                  "--out runs/ssb-try")
app.add_typer(generate_app, name="generate")


# One runnable example per stage (its `--help` ends with it): a tiny local model and offline problems.
EXAMPLES = {stage: f"Example: llm-teach generate {stage} --teacher tiny-random --data rg:chain_sum --limit 4 "
                   f"--out runs/{stage}-try" for stage in STAGES}


def _register(stage: str, help_text: str) -> None:
    @generate_app.command(stage, help=f"{help_text[0].upper()}{help_text[1:]}.", epilog=EXAMPLES[stage])
    @opt.with_role_backends("teacher", "student", before="shard")
    def command(
        teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher model spec or served model name (required).")] = None,
        data: Annotated[Optional[str], typer.Option("--data", help="Problem source (required): gsm8k, math500, rg:TASK or a .jsonl/.parquet path.")] = None,
        out: Annotated[Optional[str], typer.Option("--out", help="Output directory (required); re-running with the same one resumes.")] = None,
        student: Annotated[Optional[str], typer.Option("--student", help="Student model spec (default: the teacher).")] = None,
        limit: opt.Limit = None,
        columns: opt.Columns = None,
        split: Annotated[str, typer.Option("--split", help="Hub split for gsm8k/math500 sources.")] = "train",
        config: opt.ConfigFile = None,
        set_: opt.Set = None,
        decontaminate: Annotated[Optional[list[str]], typer.Option(
            "--decontaminate", help="Also drop generated problems overlapping this problem file (repeatable).")] = None,
        no_decontaminate: Annotated[bool, typer.Option(
            "--no-decontaminate", help="Proceed without checking generated problems against the evaluation sets "
                                       "(needed when they cannot be loaded; recorded in the manifest).")] = False,
        probe: Annotated[Optional[str], typer.Option(
            "--probe", help="arte: problem source of probe candidates (default: a held-out split of --data).")] = None,
        diagnose: Annotated[Optional[str], typer.Option(
            "--diagnose", help="stat: problem source of the diagnosis set (default: a held-out split of --data).")] = None,
        shard: opt.Shard = None,
        show_options: Annotated[bool, typer.Option("--show-options", help="List the stage's config keys (for --config and --set) with defaults and help, then exit.")] = False,
        **backend_flags: Any,
    ) -> None:
        from llm_teach.errors import UserError
        from llm_teach.runs.shard import Shard
        from llm_teach.stages import load_stage
        from llm_teach.stages.roles import Models

        if show_options:
            opt.show_options(load_stage(stage)[1])
            return
        missing = [flag for flag, value in (("--teacher", teacher), ("--data", data), ("--out", out)) if value is None]
        if missing:
            raise UserError(f"generate {stage} needs {', '.join(missing)} (see `llm-teach generate {stage} --help`)")
        parsed_shard = Shard.parse(shard) if shard is not None else None

        models = Models(
            teacher=teacher,
            student=student or teacher,
            teacher_options=opt.role_backend_options("teacher", backend_flags),
            student_options=opt.role_backend_options("student", backend_flags),
        )
        manifest = run_stage(stage, models, data=data, limit=limit, columns=opt.parse_columns(columns), split=split,
                             out=out, config_file=config, overrides=set_, decontaminate=decontaminate,
                             no_decontaminate=no_decontaminate, sources={"probe": probe, "diagnose": diagnose},
                             shard=parsed_shard)
        print_counts(stage, out, manifest)

    command.__name__ = f"generate_{stage}"


def print_counts(stage: str, out: str, manifest: dict) -> None:
    counts = manifest.get("counts", {})
    shown = ", ".join(f"{k}={v}" for k, v in counts.items())
    typer.echo(f"{stage}: wrote {out} ({shown})")


for _name, _entry in STAGES.items():
    _register(_name, _entry.help)
