"""`llm-teach train --method sft|dpo|grpo|kdrl|distill|gkd`: train the student.

Options come, lowest priority first, from `--config FILE` (YAML with the method's config
keys), the flags below, and `--set key=value`. `--show-options` lists every key of a method with
its default and help. Works unchanged under `accelerate launch ... -m llm_teach train ...`
(2 gloo ranks on CPU, DeepSpeed ZeRO on GPUs: see configs/accelerate/).
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

import llm_teach.cli.options as opt
from llm_teach.cli.app import app


@app.command("train", epilog="Example: llm-teach train --method sft --model tiny-random --data rg:chain_sum --limit 8 "
                                "--max-steps 2 --out runs/sft-try")
def train_(
    method: Annotated[str, typer.Option("--method", help="sft, dpo, grpo, kdrl, distill or gkd.")],
    out: Annotated[Optional[str], typer.Option("--out", help="Output directory (model, metrics.jsonl, manifest.json, checkpoints/).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Student model spec (see `llm-teach models list`).")] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="kdrl/distill: teacher model spec, or served model name with --teacher-backend openai.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Training records (.jsonl) or, for sft/grpo/kdrl, a Problem source (gsm8k, math500, rg:TASK).")] = None,
    limit: opt.Limit = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps (default: one epoch).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--learning-rate", help="Peak learning rate.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    lora_r: Annotated[Optional[int], typer.Option("--lora-r", help="LoRA rank (0 = full fine-tune).")] = None,
    lora_alpha: Annotated[Optional[int], typer.Option("--lora-alpha")] = None,
    lora_targets: Annotated[Optional[str], typer.Option("--lora-targets", help="Comma-separated module names, or all-linear.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="With LoRA: also write merged weights to OUT/model.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
    teacher_backend: Annotated[Optional[str], typer.Option("--teacher-backend", help="hf (in-process), openai (a vLLM server) or vllm.")] = None,
    teacher_base_url: Annotated[Optional[list[str]], typer.Option("--teacher-base-url", help="--teacher-backend openai: e.g. http://127.0.0.1:8000/v1 (several servers: repeat it or separate by commas; requests go to the least-loaded, a failing one is taken out for a cool-down); never with a key in it (name the key's environment variable with --set teacher_api_key_env=NAME).")] = None,
    report_to: Annotated[Optional[str], typer.Option("--report-to", help="none (default: metrics.jsonl only), tensorboard (OUT/tensorboard), trackio or wandb.")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="distill/gkd/kdrl teacher-hacking watch: a stronger reference model spec (golden signal).")] = None,
    stop_on_teacher_hacking: Annotated[bool, typer.Option("--stop-on-teacher-hacking", help="distill/gkd/kdrl: stop when the teacher-hacking watch fires (needs --set hacking_watch_steps=N).")] = False,
    config: opt.ConfigFile = None,
    set_: opt.Set = None,
    show_options: Annotated[bool, typer.Option("--show-options", help="List the method's config keys with defaults and help, then exit.")] = False,
) -> None:
    """Train the student with one method; prints the trained model directory."""
    from llm_teach.config import load
    from llm_teach.errors import UserError
    from llm_teach.trainers import config_class, train
    from llm_teach.trainers.lifecycle import end_process_group

    cls = config_class(method)  # an unknown method is a UserError here
    if show_options:
        opt.show_options(cls)
        return
    if out is None:
        raise UserError("--out is required")
    flags = dict(model=model, teacher=teacher, data=data, limit=limit, max_steps=max_steps,
                 learning_rate=learning_rate, seed=seed, lora_r=lora_r, lora_alpha=lora_alpha,
                 lora_targets=lora_targets, merge=merge or None, teacher_backend=teacher_backend,
                 teacher_base_url=",".join(teacher_base_url) if teacher_base_url else None, report_to=report_to,
                 reference=reference, stop_on_teacher_hacking=stop_on_teacher_hacking or None)
    given = {k: v for k, v in flags.items() if v is not None}
    teacher_keys = {k for k in given if k.startswith("teacher")}
    watch_keys = {k for k in given if k in ("reference", "stop_on_teacher_hacking")}
    if watch_keys and "reference" not in cls.__dataclass_fields__:
        raise UserError(f"--{sorted(watch_keys)[0].replace('_', '-')} is only used by distill, gkd and kdrl, not {method}")
    if teacher_keys and "teacher" not in cls.__dataclass_fields__:
        raise UserError(f"--{sorted(teacher_keys)[0].replace('_', '-')} is only used by kdrl, distill and gkd, not {method}")
    cfg = load(cls, config, set_, flags=given)
    path = train(method, cfg.to_dict(), out, resume=resume)
    end_process_group()
    if os.environ.get("RANK", "0") == "0":  # one line, not one per process of a launch
        typer.echo(str(path))
