"""The run lifecycle every trainer shares: what to do with OUT (fresh, resume or done), the
data's identity for that decision, metrics.jsonl, manifest.json and the final save. OUT's
identity, the finished-run check and the manifest go through `runs.directory.RunDirectory`;
checkpoints and `--resume` are the trainers' own.

Output directory of a run (`OUT`)::

    manifest.json      what produced it: command, resolved config, versions, world size
    metrics.jsonl      one JSON object per logging step ({"step", "loss", ...})
    checkpoints/       checkpoint-N/ written by the HF Trainer (safetensors weights)
    model/             final full weights + tokenizer (full fine-tune, or LoRA with `merge`)
    adapter/           final LoRA adapter + tokenizer (when lora_r > 0)

`train()` returns `OUT/model` when it exists, else `OUT/adapter`; both are model specs that
`llm_teach.models.load_model` accepts (an adapter directory is merged into a cached copy).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from llm_teach import interrupts
from llm_teach.errors import UserError
from llm_teach.runs.cards import write_model_card
from llm_teach.runs.directory import RunDirectory
from llm_teach.runs.hashing import DataFingerprint, file_hash
from llm_teach.trainers.train_config import TrainConfig


def source_info(source: str) -> DataFingerprint:
    """The training data's fingerprint for the manifest and for `plan_run` (`RunDirectory`'s
    `data`): the source and the content hash of a data file (a changed or grown file is not the
    same run: training order and steps depend on all of it; the same file elsewhere is). A named
    source (rg:TASK?seed=..., gsm8k) is its own content: its limit and split are in the config."""
    return DataFingerprint(source, file_hash(source) if Path(source).is_file() else f"source:{source}")


def checkpoint_dirs(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def final_model_dir(out: Path) -> Path:
    return out / "model" if (out / "model").is_dir() else out / "adapter"


def run_directory(out: Path, method: str, config: dict[str, Any], inputs: DataFingerprint) -> RunDirectory:
    """OUT claimed by a training run of kind "train:METHOD": its identity is the method, the
    resolved config but for the data's path, and the data's content (`source_info`)."""
    return RunDirectory(out, f"train:{method}", {"method": method, "config": settings(config)}, data=inputs)


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """The config as a run's identity and manifest record it: without `data`, whose path is
    recorded in the manifest's `data` section beside its content hash."""
    return {key: value for key, value in config.items() if key != "data"}


def plan_run(out: Path, method: str, config: dict[str, Any], resume: bool,
             inputs: DataFingerprint) -> tuple[str, Path | None]:
    """Decide what to do with OUT: ("done", None), ("resume", checkpoint) or ("fresh", None).

    `RunDirectory.claim` first: another kind of run in OUT, or a run of this method with another
    config or data (file hash) over checkpoints or a final model, is refused naming the changed
    keys -- finished or interrupted alike, since resuming old checkpoints under new settings would
    give a model that no manifest describes. A run that left nothing but its manifest starts over.
    Then a finished same run is not redone, and an interrupted one (Ctrl-C, a kill) resumes from
    its last checkpoint, as with `resume`. An unreadable manifest is a one-line error.
    `inputs`: `source_info(config["data"])`.
    """
    manifest = run_directory(out, method, config, inputs).claim()
    if manifest and manifest.get("status") == "complete":
        return "done", None
    checkpoints = checkpoint_dirs(out)
    if checkpoints and manifest and manifest.get("status") == "running":
        resume = True  # the same run (claim checked), interrupted: re-running the same command continues it
    if checkpoints and not resume:
        raise UserError(f"{out} already has checkpoints (last: {checkpoints[-1].name}); "
                        "pass --resume to continue it, or choose another --out")
    if resume and checkpoints:
        return "resume", checkpoints[-1]
    return "fresh", None


class MetricsLog:
    """`OUT/metrics.jsonl`: one line per logging step, written by the main process only.

    A `transformers.TrainerCallback` (built lazily so this module imports without
    transformers). On resume, lines past the checkpoint's step are dropped first: those steps
    are redone, and their metrics must not appear twice.
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.resume_step = resume_step
        self.summary: dict[str, Any] = {}

    def callback(self):
        from transformers import TrainerCallback

        log = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                if state.is_world_process_zero:
                    log._start()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    log._write(state.global_step, state.epoch, logs)

            def on_step_end(self, args, state, control, **kwargs):
                interrupts.check()  # a Ctrl-C swallowed inside the step stops the run here

        return _Callback()

    def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_step is None:
            self.path.write_text("")
            return
        keep = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.resume_step:
                        keep.append(line + "\n")
                except json.JSONDecodeError:
                    break  # a torn last line from the killed run
        self.path.write_text("".join(keep))

    def _write(self, step: int, epoch: float | None, logs: dict[str, Any]) -> None:
        if "train_runtime" in logs:  # the end-of-training summary goes to the manifest instead
            self.summary = dict(logs)
            return
        record = {"step": step, "epoch": epoch, **{k: v for k, v in logs.items() if not isinstance(v, str)}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
            handle.flush()


def run(trainer, cfg: TrainConfig, method: str, out: Path, checkpoint: Path | None,
        inputs: DataFingerprint | None = None) -> Path:
    """Train (resuming from `checkpoint` when given), save the final model, write the manifest.

    Every rank calls this (saving under ZeRO-3 gathers shards from all of them); only the main
    process writes files. `inputs`: `source_info(cfg.data)` when the caller already has it.
    """
    acc = trainer.accelerator
    metrics = MetricsLog(out / "metrics.jsonl", _checkpoint_step(checkpoint))
    trainer.add_callback(metrics.callback())
    trainer.add_callback(_umask_callback())
    world = acc.num_processes
    inputs = source_info(cfg.data) if inputs is None else inputs
    config = cfg.to_dict()
    directory = run_directory(out, method, config, inputs)
    base = dict(method=method, config=settings(config), world_size=world,
                models={"student": cfg.model, "teacher": getattr(cfg, "teacher", None)})
    if getattr(trainer, "run_warnings", None):  # e.g. distill's sparse-teacher estimate (sparse_accuracy.py)
        base["warnings"] = list(trainer.run_warnings)
    started = time.time()
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        directory.write_manifest(status="running", resumed_from=checkpoint.name if checkpoint else None, **base)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    path = save_final(trainer, cfg, out)
    if acc.is_main_process:
        directory.write_manifest(status="complete", resumed_from=checkpoint.name if checkpoint else None,
                                 global_step=trainer.state.global_step, model_dir=path.name,
                                 checkpoints=[p.name for p in checkpoint_dirs(out)],
                                 summary=metrics.summary,
                                 timings={"seconds_this_run": round(time.time() - started, 2)}, **base)
        write_model_card(path, method, config, inputs.record(), metrics.summary)
    acc.wait_for_everyone()
    return path


def _umask_callback():
    """A callback giving each checkpoint's files the user's umask (see `follow_umask`)."""
    from transformers import TrainerCallback

    from llm_teach.data.jsonl import follow_umask

    class _Callback(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                follow_umask(checkpoint)

    return _Callback()


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    return None if checkpoint is None else int(checkpoint.name.split("-")[-1])


def save_final(trainer, cfg: TrainConfig, out: Path) -> Path:
    """Write OUT/model (full weights) or OUT/adapter (+ OUT/model merged when asked).

    Written to a temporary directory then renamed, so OUT/model is never half a model.
    """
    from llm_teach.data.jsonl import follow_umask

    acc = trainer.accelerator
    unwrapped = acc.unwrap_model(trainer.model)
    if hasattr(unwrapped, "config"):
        unwrapped.config.use_cache = True  # gradient checkpointing turned it off; generation wants it
    name = "adapter" if cfg.lora_r else "model"
    tmp = out / f".{name}.partial"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    trainer.save_model(str(tmp))  # every rank: ZeRO-3 gathers the weights here
    if acc.is_main_process:
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; nothing here needs it
        if cfg.lora_r:
            # The adapter config records the base as a local cache path; keep the portable spec too.
            (tmp / "llm_teach_base.json").write_text(json.dumps({"spec": cfg.model}) + "\n")
        follow_umask(tmp)
        _replace(tmp, out / name)
        if cfg.lora_r and cfg.merge:
            merged = out / ".model.partial"
            merge_adapter(out / "adapter", merged)
            follow_umask(merged)
            _replace(merged, out / "model")
    acc.wait_for_everyone()
    return final_model_dir(out)


def _replace(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)


def merge_adapter(adapter_dir: Path, out: Path) -> None:
    """Base weights + LoRA adapter -> plain full weights (what `merge` writes); the same merge
    `llm_teach.models` does when an adapter directory is used as a model spec."""
    from llm_teach.models import _write_merged

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _write_merged(adapter_dir, out)


def end_process_group() -> None:
    """Tear down torch.distributed, if a launch started it, before the interpreter exits.

    Why: neither TRL's nor transformers' Trainer destroys the process group, and a gloo group
    left to interpreter shutdown can abort a rank ("terminate called without an active
    exception", SIGABRT) after the model is saved, so a finished run exits non-zero. Called
    once, by the process's last code (the `train` command); a no-op without a launch.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank leaves while another is still in a collective
        dist.destroy_process_group()
