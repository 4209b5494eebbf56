"""Supervised fine-tuning with TRL's SFTTrainer, loss on the completion only.

Every record kind is turned into TRL's conversational prompt-completion form, because that is
the one form where TRL's `completion_only_loss` masks the prompt for any chat template:
`{messages}` becomes prompt = all turns but the last, completion = the last (assistant) turn;
`{prompt, completion}` strings become a user and an assistant turn; a Problem becomes the
evaluation prompt and its worked solution. (`assistant_only_loss` would need a template with
`{% generation %}` markers, which e.g. SmolLM2's lacks.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_teach.errors import UserError
from llm_teach.config import check_fields, option
from llm_teach.trainers.model_loading import load_student
from llm_teach.trainers.records import (as_messages, is_records_file, load_training_problems, problem_prompt,
                                        read_records)
from llm_teach.trainers.train_config import TrainConfig, lora_config, make_args, trl_kwargs


@dataclass
class SFTConfig(TrainConfig):
    """SFT on `{messages}` / `{prompt, completion}` records or on a Problem source's solutions."""

    learning_rate: float = option("Peak learning rate (AdamW).", 2e-5)
    max_length: int = option("Truncate prompt+completion to this many tokens.", 1024)
    chat: bool = option("Wrap plain-text prompts/completions as a user/assistant chat turn, so the model is "
                       "trained in the chat format evaluation prompts it with.", True)
    packing: bool = option("Pack several records per sequence (TRL packing).", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, max_length=">= 1")


def build_dataset(cfg: SFTConfig) -> list[dict[str, Any]]:
    """Rows `{prompt, completion}` in TRL's format; bad records raise a UserError naming file:line."""
    if not is_records_file(cfg.data):
        rows = []
        for p in load_training_problems(cfg):
            completion = p.solution if p.solution else f"The answer is \\boxed{{{p.answer}}}."
            rows.append({"prompt": problem_prompt(p.question, cfg.template),
                         "completion": [{"role": "assistant", "content": completion}]})
        return rows
    rows = []
    for where, rec in read_records(cfg.data, cfg.limit):
        if "messages" in rec:
            messages = as_messages(rec["messages"], "user", where, "messages")
            if len(messages) < 2 or messages[-1]["role"] != "assistant":
                raise UserError(f"{where}: 'messages' must end with an assistant turn after at least one other turn")
            rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
        elif "prompt" in rec or "completion" in rec:
            for key in ("prompt", "completion"):
                if key not in rec:
                    raise UserError(f"{where}: missing key '{key}' (sft records need 'messages', or 'prompt' and "
                                    f"'completion'; found: {', '.join(rec)})")
            prompt, completion = rec["prompt"], rec["completion"]
            if cfg.chat or isinstance(prompt, list) or isinstance(completion, list):
                prompt = as_messages(prompt, "user", where, "prompt")
                completion = as_messages(completion, "assistant", where, "completion")
            elif not (isinstance(prompt, str) and isinstance(completion, str)):
                raise UserError(f"{where}: 'prompt' and 'completion' must be text or chat messages")
            rows.append({"prompt": prompt, "completion": completion})
        else:
            raise UserError(f"{where}: missing key 'messages' (sft records need 'messages', or 'prompt' and "
                            f"'completion'; found: {', '.join(rec) or 'nothing'})")
    if len({isinstance(r["prompt"], list) for r in rows}) > 1:
        raise UserError(f"{cfg.data}: mixes chat and plain-text records; set chat: true to train them together")
    return rows


def build_trainer(cfg: SFTConfig, out: Path, callbacks=None):
    import datasets
    import trl

    from llm_teach.models import load_tokenizer

    rows = build_dataset(cfg)
    args = make_args(trl.SFTConfig, **trl_kwargs(cfg, out), max_length=cfg.max_length, packing=cfg.packing,
                         completion_only_loss=True, dataset_num_proc=None)
    tokenizer = load_tokenizer(cfg.model)
    return trl.SFTTrainer(model=load_student(cfg), args=args, train_dataset=datasets.Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora_config(cfg), callbacks=callbacks)
