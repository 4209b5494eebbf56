"""What every trainer shares: the common config fields, TRL/PEFT arguments built from them,
the training-record readers, and the run lifecycle (output directory, metrics.jsonl,
manifest.json, resume, final save).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from llm_teach.config import check_choices
from llm_teach.data.jsonl import iter_jsonl
from llm_teach.errors import UserError
from llm_teach.models import first_line

# -- config -----------------------------------------------------------------------------------

TeacherBackend = Literal["hf", "openai", "vllm"]  # kdrl/distill `teacher_backend`


def option(text: str, default: Any = None, factory: Any = None):
    """A config field with TRL-style help text (shown by `llm-teach train --show-options`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Fields common to every method. Each method's config extends this one; `values` given to
    `train()`, YAML files and `--set key=value` all use these names."""

    model: str = field(metadata={"help": "Student model spec (see `llm-teach models list`), e.g. tiny-random, "
                                         "smollm2-135m?layers=6, a local directory or an adapter directory."})
    data: str = field(metadata={"help": "Training data: a JSONL file of training records, or a Problem source "
                                        "(gsm8k, math500, rg:TASK, a problems file) where the method accepts one."})
    limit: int | None = option("Use only the first N records/problems.")
    split: str = option("Split of a hub Problem source (gsm8k/math500) to train on.", "train")
    template: str = option("Prompt template (under prompts/) turning a Problem's question into the user turn; "
                          "the same one evaluation uses, so training and evaluation prompts match.",
                          "eval/boxed.jinja")
    max_steps: int = option("Optimizer steps to run; -1 runs `num_train_epochs` over the data.", -1)
    num_train_epochs: float = option("Epochs over the data when max_steps is -1.", 1.0)
    learning_rate: float = option("Peak learning rate (AdamW).", 1e-5)
    lr_scheduler_type: str = option("transformers scheduler name: linear, cosine, constant, ...", "linear")
    warmup_steps: int = option("Linear warm-up steps.", 0)
    weight_decay: float = option("AdamW weight decay.", 0.0)
    max_grad_norm: float = option("Gradient clipping norm.", 1.0)
    per_device_train_batch_size: int = option("Sequences per device per micro-step (for grpo/kdrl: completions).", 4)
    gradient_accumulation_steps: int = option("Micro-steps accumulated per optimizer step.", 1)
    seed: int = option("Seed of weights init (LoRA), data order and sampling.", 0)
    dtype: str = option("Weights dtype when loading: float32, bfloat16, float16 or auto (bf16 on GPU, fp32 on CPU).",
                       "float32")
    bf16: bool | None = option("bf16 autocast (mixed precision); default: on with a GPU, off on CPU (fp32).")
    gradient_checkpointing: bool = option("Recompute activations in the backward to save memory (~20-30% slower).",
                                         False)
    lora_r: int = option("LoRA rank; 0 = full fine-tune.", 0)
    lora_alpha: int = option("LoRA scaling alpha.", 16)
    lora_dropout: float = option("LoRA dropout.", 0.0)
    lora_targets: list[str] = option("Modules LoRA adapts: 'all-linear' or names like q_proj,v_proj.",
                                    factory=lambda: ["all-linear"])
    merge: bool = option("With LoRA: also write merged full weights to OUT/model.", False)
    qlora: bool = option("QLoRA: load the frozen base in 4-bit NF4 under the LoRA adapter (bitsandbytes, CUDA "
                         "only).", False)
    logging_steps: int = option("Optimizer steps between metrics.jsonl lines.", 1)
    save_steps: int = option("Optimizer steps between checkpoints (one is always written at the end).", 500)
    save_total_limit: int | None = option("Keep at most this many checkpoints (None = all).", 2)
    deepspeed: str | None = option("DeepSpeed JSON (e.g. configs/deepspeed/zero3.json) when launched with "
                                  "torchrun/deepspeed instead of an accelerate DeepSpeed config.")

    def __post_init__(self) -> None:
        check_choices(self)  # Literal fields, for configs built in Python rather than by config.build
        if not self.model:
            raise ValueError("'model' is required (the student model spec)")
        if not self.data:
            raise ValueError("'data' is required (a records file or Problem source)")
        if self.lora_r < 0:
            raise ValueError("'lora_r' must be >= 0")
        if (self.merge or self.qlora) and self.lora_r == 0:
            raise ValueError("'merge' and 'qlora' only apply with LoRA (lora_r > 0)")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("'max_steps' must be a positive number of steps, or -1 for epochs")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trl_kwargs(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """The TrainingArguments fields every TRL config takes, from our common fields.

    CPU defaults: `use_cpu=True` without CUDA (also what turns a 2-process launch into gloo
    ranks), fp32, no gradient checkpointing, no reporting integrations, no dataloader workers
    (the machine's two cores are for the model).
    """
    import torch

    return dict(
        output_dir=str(out / "checkpoints"),
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=torch.cuda.is_available() if cfg.bf16 is None else cfg.bf16,
        fp16=False,
        activation_checkpointing=cfg.gradient_checkpointing,  # the new name of gradient_checkpointing
        logging_steps=cfg.logging_steps,
        logging_strategy="steps",
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable parameter gets a gradient each step
        deepspeed=cfg.deepspeed,
        disable_tqdm=True,
    )


def make_args(cls, **kwargs):
    """Instantiate a TRL/transformers config; its own validation errors (e.g. a batch size that
    does not split into GRPO groups) become one-line UserErrors."""
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise UserError(f"{cls.__name__}: {first_line(exc)}") from None


def lora_config(cfg: TrainConfig):
    """A PEFT LoraConfig, or None for a full fine-tune. TRL wraps the model with it."""
    if cfg.lora_r == 0:
        return None
    from peft import LoraConfig

    targets = cfg.lora_targets
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets[0] if targets == ["all-linear"] else list(targets),
                      task_type="CAUSAL_LM")


def load_model(spec: str, dtype: str, **kwargs):
    """Load a causal LM for training. Call it AFTER the TRL config exists: under DeepSpeed
    ZeRO-3, `from_pretrained` must see that config to partition the weights while loading."""
    from trl.trainer.utils import create_model_from_path

    from llm_teach.models import default_device, prepare, torch_dtype

    try:
        # "auto" is resolved here (bf16 with a GPU, fp32 without), not by from_pretrained's own "auto".
        return create_model_from_path(prepare(spec), dtype=torch_dtype(dtype, default_device()), **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model '{spec}': {first_line(exc)}") from None


def load_student(cfg: TrainConfig):
    if not cfg.qlora:
        return load_model(cfg.model, cfg.dtype)
    # QLoRA (written for GPUs, not run on this project's CPU test machine): 4-bit NF4 base on
    # this rank's GPU; TRL sees `is_loaded_in_4bit` and prepares it for the LoRA adapter.
    import torch
    from accelerate import PartialState
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise UserError("qlora needs a CUDA GPU (bitsandbytes 4-bit weights)")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    return load_model(cfg.model, "bfloat16", quantization_config=quant,
                      device_map={"": PartialState().local_process_index})


def load_teacher(spec: str, dtype: str):
    """A frozen local teacher: eval mode, no gradients."""
    return load_model(spec, dtype).eval().requires_grad_(False)


def make_teacher(cfg, student_tokenizer):
    """The teacher of kdrl/distill from a config's `teacher`, `teacher_backend`,
    `teacher_base_url` and `teacher_dtype`: with backend hf a frozen local model (after checking
    it shares the student's tokenizer), otherwise a `Backend` that can `score()`."""
    if cfg.teacher_backend == "hf":
        from llm_teach.models import load_tokenizer

        check_same_tokenizer(student_tokenizer, load_tokenizer(cfg.teacher), cfg.model, cfg.teacher)
        return load_teacher(cfg.teacher, cfg.teacher_dtype)
    from llm_teach.backends import BackendOptions, make_backend

    try:
        backend = make_backend(cfg.teacher, BackendOptions(backend=cfg.teacher_backend, base_url=cfg.teacher_base_url,
                                                           dtype=cfg.teacher_dtype, tokenizer=cfg.model))
    except ModuleNotFoundError as exc:
        raise UserError(f"teacher backend '{cfg.teacher_backend}' is not available here ({exc.name} missing)") from None
    if not hasattr(backend, "score"):
        raise UserError(f"teacher backend '{cfg.teacher_backend}' cannot score completions")
    return backend


def prepare_frozen(model, trainer):
    """Place a frozen helper model (teacher) the way TRL places its reference model."""
    from trl.models.utils import prepare_deepspeed

    if trainer.is_deepspeed_enabled:
        return prepare_deepspeed(model, trainer.accelerator)
    return trainer.accelerator.prepare_model(model, evaluation_mode=True)


def check_same_tokenizer(student_tok, teacher_tok, student: str, teacher: str) -> None:
    """KDRL and online distillation score the STUDENT's token ids with the teacher, which is
    only meaningful when both tokenizers map ids to the same strings."""
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise UserError(
            f"teacher '{teacher}' has a different tokenizer than student '{student}' "
            f"({len(teacher_tok)} vs {len(student_tok)} tokens): token-level distillation needs a shared "
            "tokenizer; use a teacher from the same model family, or sequence-level KD (sft on teacher outputs)")


# -- training records -------------------------------------------------------------------------


def is_records_file(source: str) -> bool:
    return Path(source).suffix in (".jsonl", ".json") and Path(source).is_file()


def read_records(source: str, limit: int | None) -> list[tuple[str, dict[str, Any]]]:
    """`(where, record)` pairs from a JSONL (or JSON list) file; `where` is "FILE: line N"."""
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UserError(f"{path}: expected a JSON list of objects")
        rows = [(f"{path}: item {i}", r) for i, r in enumerate(data, start=1)]
    else:
        rows = [(f"{path}: line {n}", r) for n, r in iter_jsonl(path)]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise UserError(f"{path}: no records")
    return rows


def require(record: dict[str, Any], keys: tuple[str, ...], where: str, kind: str) -> None:
    for key in keys:
        if key not in record:
            raise UserError(f"{where}: missing key '{key}' ({kind} records need {', '.join(keys)}; "
                            f"found: {', '.join(record) or 'nothing'})")


def as_messages(value: Any, role: str, where: str, key: str) -> list[dict[str, str]]:
    """A string becomes one `role` turn; a list must already be chat messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UserError(f"{where}: key '{key}' must be text or a list of {{role, content}} messages")


def problem_prompt(question: str, template: str) -> list[dict[str, str]]:
    """The chat prompt a Problem is asked with, identical to `llm-teach eval`'s."""
    from llm_teach.prompts import render

    return [{"role": "user", "content": render(template, question=question)}]


def load_training_problems(cfg: TrainConfig):
    from llm_teach.data import load_problems

    return load_problems(cfg.data, cfg.limit, split=cfg.split)


def source_info(source: str) -> dict[str, Any]:
    from llm_teach.manifest import file_hash

    info: dict[str, Any] = {"data": source}
    if Path(source).is_file():
        info["data_hash"] = file_hash(source)
    return info


# -- run lifecycle ----------------------------------------------------------------------------


def checkpoint_dirs(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def final_model_dir(out: Path) -> Path:
    return out / "model" if (out / "model").is_dir() else out / "adapter"


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def plan_run(out: Path, method: str, config: dict[str, Any], resume: bool,
             inputs: dict[str, Any] | None = None) -> tuple[str, Path | None]:
    """Decide what to do with OUT: ("done", None), ("resume", checkpoint) or ("fresh", None).

    A finished run with the same config and the same data (file hash) is not redone; anything
    else already in OUT that would be overwritten or silently mixed in is an error naming the fix.
    `inputs`: `source_info(config["data"])` when the caller already has it (it hashes the file).
    """
    manifest = read_manifest(out)
    if manifest and manifest.get("status") == "complete":
        if inputs is None:
            inputs = source_info(config["data"])
        same_data = manifest.get("inputs") == _jsonable(inputs)
        if manifest.get("method") == method and manifest.get("config") == _jsonable(config) and same_data:
            return "done", None
        what = "config" if same_data else "data (the file changed since)"
        raise UserError(f"{out} holds a finished '{manifest.get('method')}' run with a different {what}; "
                        "choose another --out")
    checkpoints = checkpoint_dirs(out)
    if checkpoints and not resume:
        raise UserError(f"{out} already has checkpoints (last: {checkpoints[-1].name}); "
                        "pass --resume to continue it, or choose another --out")
    if resume and checkpoints:
        if manifest and manifest.get("method") not in (None, method):
            raise UserError(f"{out} holds a '{manifest.get('method')}' run; cannot resume it as '{method}'")
        return "resume", checkpoints[-1]
    return "fresh", None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


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
        inputs: dict[str, Any] | None = None) -> Path:
    """Train (resuming from `checkpoint` when given), save the final model, write the manifest.

    Every rank calls this (saving under ZeRO-3 gathers shards from all of them); only the main
    process writes files. `inputs`: `source_info(cfg.data)` when the caller already has it.
    """
    from llm_teach.manifest import write_manifest

    acc = trainer.accelerator
    metrics = MetricsLog(out / "metrics.jsonl", _checkpoint_step(checkpoint))
    trainer.add_callback(metrics.callback())
    world = acc.num_processes
    base = dict(method=method, config=cfg.to_dict(), world_size=world,
                models={"student": cfg.model, "teacher": getattr(cfg, "teacher", None)},
                inputs=source_info(cfg.data) if inputs is None else inputs)
    started = time.time()
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, status="running", resumed_from=checkpoint.name if checkpoint else None, **base)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    path = save_final(trainer, cfg, out)
    if acc.is_main_process:
        write_manifest(out, status="complete", resumed_from=checkpoint.name if checkpoint else None,
                       global_step=trainer.state.global_step, model_dir=path.name,
                       checkpoints=[p.name for p in checkpoint_dirs(out)],
                       summary=metrics.summary, timings={"seconds_this_run": round(time.time() - started, 2)},
                       **base)
    acc.wait_for_everyone()
    return path


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    return None if checkpoint is None else int(checkpoint.name.split("-")[-1])


def save_final(trainer, cfg: TrainConfig, out: Path) -> Path:
    """Write OUT/model (full weights) or OUT/adapter (+ OUT/model merged when asked).

    Written to a temporary directory then renamed, so OUT/model is never half a model.
    """
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
        _replace(tmp, out / name)
        if cfg.lora_r and cfg.merge:
            merged = out / ".model.partial"
            merge_adapter(out / "adapter", merged)
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
