"""Train in-process, or as `accelerate launch ... -m llm_teach train` for multi-GPU / ZeRO.

Stages (LLM2LLM's rounds) and pipelines train through `train_model`. With no `launch` options
it calls `llm_teach.trainers.train` directly; with them it writes the method config to a file
and runs the training CLI under `accelerate launch`, which is how the DeepSpeed ZeRO configs
in `configs/accelerate/` are used at GPU scale (a process group cannot be started from
inside an already running single process). Either way a killed run resumes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from llm_teach.config import check_keys
from llm_teach.data.jsonl import write_json_atomic
from llm_teach.errors import UserError

LAUNCH_KEYS = {"config_file", "num_processes", "args"}  # accelerate launch options we pass on


def train_model(method: str, values: dict[str, Any], out: str | Path, launch: dict[str, Any] | None = None) -> Path:
    """Train and return the model directory (see `llm_teach.trainers.train`)."""
    from llm_teach.trainers import make_config, train
    from llm_teach.trainers.lifecycle import final_model_dir

    out = Path(out)
    if not launch:
        return train(method, values, out, resume=True)
    check_keys(launch, LAUNCH_KEYS, "launch")
    make_config(method, values)  # fail here, not in N processes
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "launch-config.json"  # JSON is YAML: `train --config` reads it
    write_json_atomic(config_file, values)
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.get("config_file"):
        command += ["--config_file", str(launch["config_file"])]
    if launch.get("num_processes"):
        command += ["--num_processes", str(launch["num_processes"])]
    command += [str(a) for a in launch.get("args", [])]
    command += ["-m", "llm_teach", "train", "--method", method, "--config", str(config_file), "--out", str(out), "--resume"]
    if subprocess.run(command).returncode != 0:
        raise UserError(f"training failed: `{' '.join(command)}`; re-run to resume")
    return final_model_dir(out)
