"""Readers of training data: record files (JSONL or a JSON list) with `where` locations for
one-line errors, their key and chat-message checks, and Problem sources asked with the same
prompt `llm-teach eval` uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_teach.data.jsonl import iter_jsonl, read_text
from llm_teach.errors import UserError
from llm_teach.trainers.train_config import TrainConfig

def is_records_file(source: str) -> bool:
    return Path(source).suffix in (".jsonl", ".json") and Path(source).is_file()


def read_records(source: str, limit: int | None) -> list[tuple[str, dict[str, Any]]]:
    """`(where, record)` pairs from a JSONL (or JSON list) file; `where` is "FILE: line N"."""
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if path.suffix == ".json":
        try:
            data = json.loads(read_text(path))
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


def end_turns(records: list[tuple[str, dict[str, Any]]], online: bool, chat: bool, tokenizer
              ) -> list[tuple[str, dict[str, Any]]]:
    """Distill records as the student should see them: plain-text prompts as a user chat turn
    (`chat`, when the tokenizer has a template), and every online completion ended with the
    end-of-turn token (the tokenizer's EOS, the token chat templates close the assistant turn
    with), so the student learns to STOP where the teacher's answer ends. Idempotent. Stored completions (`logits_ref`) are the ids the teacher scored
    and are left as they are: the store has no teacher distribution for a token it never saw."""
    chat = chat and bool(getattr(tokenizer, "chat_template", None))
    eos = tokenizer.eos_token
    out = []
    for where, rec in records:
        rec = dict(rec)
        for key in ("prompt", "teacher_prompt"):
            if chat and isinstance(rec.get(key), str):
                rec[key] = [{"role": "user", "content": rec[key]}]
        if online and eos and not rec["completion"].endswith(eos):
            rec["completion"] = rec["completion"] + eos
        out.append((where, rec))
    return out
