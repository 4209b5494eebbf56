"""Trainers built on TRL (SFT, DPO, GRPO, KDRL, distillation) and their losses.

One entry point for the CLI and the stages::

    from llm_teach.trainers import train
    model_dir = train("sft", {"model": "tiny-random", "data": "records.jsonl", "max_steps": 10}, "runs/sft")

`values` are the method config's fields (the same keys as a YAML config or `--set key=value`;
`llm-teach train --method M --show-options` lists them); the returned directory is a model spec
`llm_teach.models.load_model` accepts: OUT/model (full or merged weights) or OUT/adapter.

| method  | data                                                     | built on                          |
|---------|----------------------------------------------------------|-----------------------------------|
| sft     | `{messages}`, `{prompt, completion}` or Problems          | trl.SFTTrainer, completion-only   |
| dpo     | `{prompt, chosen, rejected}`                             | trl.DPOTrainer                    |
| grpo    | Problems (reward: `llm_teach.grading` correctness)        | trl.GRPOTrainer                   |
| kdrl    | Problems + a teacher                                     | trl.GRPOTrainer subclass (kdrl.py)|
| distill | `{prompt, teacher_prompt, completion, logits_ref}`       | transformers.Trainer subclass     |
| gkd     | Problems or `{prompt, completion}` + a teacher           | Trainer + trl GKD pieces (gkd.py) |

distill, gkd and kdrl take the teacher-hacking watch's options (`hacking_watch.WatchConfig`).
Every run writes OUT/metrics.jsonl, OUT/manifest.json and OUT/checkpoints/ (see lifecycle.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from llm_teach.errors import UserError

# method -> (module, config class name)
METHODS = {
    "sft": ("llm_teach.trainers.sft", "SFTConfig"),
    "dpo": ("llm_teach.trainers.dpo", "DPOConfig"),
    "grpo": ("llm_teach.trainers.grpo", "GRPOConfig"),
    "kdrl": ("llm_teach.trainers.kdrl", "KDRLConfig"),
    "distill": ("llm_teach.trainers.distill", "DistillConfig"),
    "gkd": ("llm_teach.trainers.gkd", "GKDConfig"),
}


def method_module(method: str):
    if method not in METHODS:
        raise UserError(f"unknown training method '{method}' (choose from {', '.join(METHODS)})")
    return importlib.import_module(METHODS[method][0])


def config_class(method: str) -> type:
    return getattr(method_module(method), METHODS[method][1])


def make_config(method: str, values: dict[str, Any], where: str = "train config"):
    """Validate `values` into the method's config dataclass; unknown keys are a UserError."""
    from llm_teach.config import build

    return build(config_class(method), values, where)


def train(method: str, values: dict[str, Any], out: str | Path, *, resume: bool = False,
          callbacks: list | None = None) -> Path:
    """Train with `method` and return the trained model directory (OUT/model or OUT/adapter).

    A finished run in `out` with the same method and config is returned as is. Existing
    checkpoints are continued with `resume=True` (same step count and data order as an
    uninterrupted run), or without it when they are an interrupted run of the same config and
    data; other checkpoints are an error. `callbacks` are extra
    `transformers.TrainerCallback`s (tests use one to crash a run mid-way).
    """
    from llm_teach.trainers import lifecycle
    from llm_teach.trainers.deepspeed_ops import skip_inference_comm_op

    from llm_teach.runs.directory import check_out_dir

    cfg = make_config(method, values)
    out = Path(out)
    check_out_dir(out)  # a file in the way, or an unreadable manifest: one line, before any model loads
    inputs = lifecycle.source_info(cfg.data)  # hashes the data file: once, for plan_run and the manifest
    action, checkpoint = lifecycle.plan_run(out, method, cfg.to_dict(), resume, inputs)
    if action == "done":
        return lifecycle.final_model_dir(out)
    skip_inference_comm_op(cfg.deepspeed)  # before the process group starts (see deepspeed_ops)
    # Data and models are validated and loaded before anything is written to `out`.
    trainer = method_module(method).build_trainer(cfg, out, callbacks=callbacks)
    return lifecycle.run(trainer, cfg, method, out, checkpoint, inputs)


__all__ = ["METHODS", "config_class", "make_config", "train"]
