"""`llm-teach merge OUT_1 ... OUT_N --out MERGED`: the shards of one sharded `generate` as one run."""

from __future__ import annotations

from typing import Annotated

import typer

from llm_teach.cli.app import app


@app.command("merge")
def merge(
    shards: Annotated[list[str], typer.Argument(help="The --out directories of `generate STAGE ... --shard K/N`, "
                                                     "K = 1..N (any order).")],
    out: Annotated[str, typer.Option("--out", help="New directory for the merged run.")],
) -> None:
    """Merge the outputs of `generate STAGE ... --shard K/N` into one run directory: the units
    in the unsharded run's order, each once; the output files rebuilt from them; one logit store
    (records' logits_ref point into it); one manifest naming the shards. Refuses shards of
    different runs (stage, config, models, prompts, seed, data), a missing or unfinished shard,
    and an OUT that is not new."""
    from llm_teach.runs.merge import merge_shards

    manifest = merge_shards(shards, out)
    shown = ", ".join(f"{k}={v}" for k, v in manifest.get("counts", {}).items())
    typer.echo(f"merge: wrote {out} from {len(manifest['shards'])} shards ({shown})")
