"""The config every trainer extends and its mapping onto TRL/PEFT arguments.

`TrainConfig` holds the fields common to every method (each method's config dataclass extends
it, TRL-style, with help text on every field); `trl_kwargs`, `make_args` and `lora_config`
turn it into the TrainingArguments fields and PEFT config the TRL trainers take.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from llm_teach.config import FieldError, check_fields, option
from llm_teach.errors import UserError
from llm_teach.models import first_line

TeacherBackend = Literal["hf", "openai", "vllm"]  # kdrl/distill `teacher_backend`
ReportTo = Literal["none", "tensorboard", "trackio", "wandb"]  # TRL's `report_to` integrations we name


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
    report_to: ReportTo = option("Also send metrics to a tracker (TRL's report_to): none (metrics.jsonl only), "
                                 "tensorboard (event files in OUT/tensorboard), trackio or wandb (their own "
                                 "settings and logins apply).", "none")
    deepspeed: str | None = option("DeepSpeed JSON (e.g. configs/deepspeed/zero3.json) when launched with "
                                  "torchrun/deepspeed instead of an accelerate DeepSpeed config.")

    def __post_init__(self) -> None:
        # Choices and ranges (seed >= 0: numpy refuses negative seeds), for every way a config is built.
        check_fields(self, limit=">= 1", num_train_epochs="> 0", learning_rate="> 0", warmup_steps=">= 0",
                           weight_decay=">= 0", max_grad_norm=">= 0", per_device_train_batch_size=">= 1",
                           gradient_accumulation_steps=">= 1", seed=">= 0", lora_r=">= 0", lora_alpha=">= 1",
                           lora_dropout="[0, 1)", logging_steps=">= 1", save_steps=">= 1", save_total_limit=">= 1")
        if not self.model:
            raise FieldError("model", "is required (the student model spec)")
        if not self.data:
            raise FieldError("data", "is required (a records file or Problem source)")
        if (self.merge or self.qlora) and self.lora_r == 0:
            raise ValueError("'merge' and 'qlora' only apply with LoRA (lora_r > 0)")
        if self.max_steps == 0 or self.max_steps < -1:
            raise FieldError("max_steps",
                             f"must be a positive number of steps, or -1 for epochs (got {self.max_steps})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trl_kwargs(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """The TrainingArguments fields every TRL config takes, from our common fields.

    CPU defaults: `use_cpu=True` without CUDA (also what turns a 2-process launch into gloo
    ranks), fp32, no gradient checkpointing, no reporting integrations unless `report_to`
    names one, no dataloader workers (the machine's two cores are for the model).
    """
    import os

    import torch

    if cfg.report_to == "tensorboard":
        # transformers' TensorBoardCallback reads its directory from this variable only (else a
        # dated folder under checkpoints/); one run's events belong in its own OUT.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tensorboard")

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
        report_to=cfg.report_to,
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
