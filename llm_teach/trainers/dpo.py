"""Direct preference optimization with TRL's DPOTrainer on `{prompt, chosen, rejected}` records.

The reference model is TRL's: a frozen copy of the starting weights, or, with LoRA, the same
weights with the adapter disabled (no second copy in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_teach.errors import UserError
from llm_teach.config import check_fields, option
from llm_teach.trainers.model_loading import load_student
from llm_teach.trainers.records import as_messages, is_records_file, read_records, require
from llm_teach.trainers.train_config import TrainConfig, lora_config, make_args, trl_kwargs

KEYS = ("prompt", "chosen", "rejected")


@dataclass
class DPOConfig(TrainConfig):
    """DPO on preference pairs."""

    learning_rate: float = option("Peak learning rate (AdamW); DPO wants it small.", 1e-6)
    per_device_train_batch_size: int = option("Preference pairs per device per micro-step.", 2)
    beta: float = option("DPO temperature beta: how far the policy may move from the reference.", 0.1)
    loss_type: list[str] = option("TRL DPO loss type(s): sigmoid (DPO), ipo, hinge, robust, ...",
                                 factory=lambda: ["sigmoid"])
    label_smoothing: float = option("Conservative-DPO label smoothing (0 = plain DPO).", 0.0)
    max_length: int = option("Truncate prompt+response to this many tokens.", 1024)
    chat: bool = option("Wrap plain-text prompt/responses as user/assistant turns (the format evaluation uses).",
                       True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, beta="> 0", label_smoothing="[0, 0.5]", max_length=">= 1")


def build_dataset(cfg: DPOConfig) -> list[dict[str, Any]]:
    if not is_records_file(cfg.data):
        raise UserError(f"dpo needs a JSONL file of {{prompt, chosen, rejected}} records, not '{cfg.data}'")
    rows = []
    for where, rec in read_records(cfg.data, cfg.limit):
        require(rec, KEYS, where, "dpo")
        values = [rec[k] for k in KEYS]
        if cfg.chat or any(isinstance(v, list) for v in values):
            rows.append({"prompt": as_messages(rec["prompt"], "user", where, "prompt"),
                         "chosen": as_messages(rec["chosen"], "assistant", where, "chosen"),
                         "rejected": as_messages(rec["rejected"], "assistant", where, "rejected")})
        elif all(isinstance(v, str) for v in values):
            rows.append(dict(zip(KEYS, values)))
        else:
            raise UserError(f"{where}: prompt, chosen and rejected must be text or chat messages")
    return rows


def build_trainer(cfg: DPOConfig, out: Path, callbacks=None):
    import datasets
    import trl

    from llm_teach.models import load_tokenizer

    rows = build_dataset(cfg)
    args = make_args(trl.DPOConfig, **trl_kwargs(cfg, out), beta=cfg.beta, loss_type=list(cfg.loss_type),
                         label_smoothing=cfg.label_smoothing, max_length=cfg.max_length)
    return trl.DPOTrainer(model=load_student(cfg), args=args, train_dataset=datasets.Dataset.from_list(rows),
                          processing_class=load_tokenizer(cfg.model), peft_config=lora_config(cfg),
                          callbacks=callbacks)
